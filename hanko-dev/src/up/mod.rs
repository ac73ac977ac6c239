//! `hanko-dev up`: the whole stack on one machine with one command.
//!
//! 1. a private PostgreSQL cluster in the data directory, on a free
//!    loopback port, reused on the next run;
//! 2. `item-api migrate`, the `authenticator` password, demo items;
//! 3. `hanko-dev serve`, `item-api serve` and `edge-proxy`, each polled
//!    until healthy;
//! 4. the proxy URL, demo tokens and `curl` lines;
//! 5. the foreground: children's log lines behind their names, until
//!    SIGINT, SIGTERM or SIGHUP stops everything `up` started, by PID. The
//!    data stays; `--reset` starts afresh.
//!
//! `up` never restarts a child: when one exits, the whole stack stops.

mod banner;
mod binaries;
mod children;
mod database;
mod files;
mod ownership;
mod postgres;
mod stack_config;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub use binaries::BuildPolicy;
pub use database::{DEMO_USERS, DemoUser};
pub use stack_config::StackConfig;

use crate::claims::TokenRequest;
use crate::keys::DEFAULT_KEY_BITS;
use crate::store::DataDir;
use banner::Banner;
use binaries::StackBinaries;
use children::{StopRequest, Supervised, print_output, say};
use postgres::{Cluster, PgTools};

/// The subdirectory of the `up` data directory that hanko-dev serves from.
pub const HANKO_SUBDIR: &str = "hanko";

const AUTHENTICATOR_PASSWORD_FILE: &str = "authenticator-password";

/// Options of `hanko-dev up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The shared config file all three programs read.
    pub config: PathBuf,
    /// Directory for the cluster, keys and passwords, kept between runs.
    pub data_dir: PathBuf,
    /// Delete the data of earlier runs first.
    pub reset: bool,
    /// Whether `cargo build` may run.
    pub build: BuildPolicy,
}

/// Runs the stack until SIGINT, SIGTERM or SIGHUP, or until a component
/// fails.
///
/// # Errors
///
/// Fails when a step cannot complete or a component exits on its own;
/// everything started so far has been stopped by then.
pub async fn run(options: UpOptions) -> Result<()> {
    // Handlers go in first: from here on SIGINT, SIGTERM and SIGHUP only
    // ask for an orderly stop and never kill `up` half-way.
    let stop = listen_for_stop_signals()?;

    let config = StackConfig::load(&options.config)?;
    let tools = PgTools::find()?;
    if options.reset {
        reset(&options.data_dir, tools.clone()).await?;
    }
    prepare_data_dir(&options.data_dir)?;
    config.check_ports_free(&options.config)?;
    if !config.routes_reach_backend {
        say(&format!(
            "warning: no [[proxy.routes]] upstream in {} points at [backend] listen {}; \
             requests through the proxy will not reach item-api",
            options.config.display(),
            config.backend_listen
        ));
    }
    let binaries = StackBinaries::locate(options.build)?;
    check_edge_proxy_config(&binaries, &options.config).await?;

    let mut stack = Stack::default();
    let outcome = match stack
        .bring_up(&options, &config, &binaries, tools, &stop)
        .await
    {
        Ok(()) => stack.run_until_stopped(stop).await,
        Err(error) => Err(error),
    };
    stack.shut_down().await;
    outcome
}

/// The processes `up` has started, in start order.
#[derive(Default)]
struct Stack {
    cluster: Option<Cluster>,
    children: Vec<Supervised>,
}

impl Stack {
    async fn bring_up(
        &mut self,
        options: &UpOptions,
        config: &StackConfig,
        binaries: &StackBinaries,
        tools: PgTools,
        stop: &StopRequest,
    ) -> Result<()> {
        // A build before this may have taken minutes; honour a stop
        // requested meanwhile before starting anything.
        check_stop(stop)?;

        // Step 1: PostgreSQL. Recorded before it starts, so a failure half
        // way still ends in `pg_ctl stop`.
        let cluster = self
            .cluster
            .insert(Cluster::prepare(&options.data_dir, tools).await?);
        cluster.start().await?;
        check_stop(stop)?;

        // Step 2: schema, the authenticator's password, demo items.
        database::ensure_database(&cluster.admin_url("postgres")).await?;
        let admin_url = cluster.admin_url(database::DATABASE);
        run_migrations(binaries, &options.config, &admin_url).await?;
        let password =
            files::read_or_create_secret(&options.data_dir.join(AUTHENTICATOR_PASSWORD_FILE))?;
        database::set_authenticator_password(&admin_url, &password).await?;
        let item_of_a = database::seed_demo_items(&admin_url).await?;
        say("database migrated and demo items in place");
        let app_url = format!(
            "postgres://authenticator:{password}@127.0.0.1:{}/{}?sslmode=disable",
            cluster.port(),
            database::DATABASE
        );
        let postgres = (cluster.port(), cluster.dir().to_path_buf());
        check_stop(stop)?;

        // Step 3: the three services, each healthy before the next starts.
        let hanko_dir = options.data_dir.join(HANKO_SUBDIR);
        let keys = DataDir::open(&hanko_dir)?;
        let signing_key = keys.signing_key(DEFAULT_KEY_BITS)?;

        let mut hanko = Command::new(&binaries.hanko_dev);
        hanko
            .arg("serve")
            .arg("--listen")
            .arg(config.hanko_listen.to_string())
            .arg("--data-dir")
            .arg(&hanko_dir);
        self.start_child(
            "hanko-dev",
            hanko,
            "TERM",
            &format!("http://{}/healthz", config.hanko_listen),
            stop,
        )
        .await?;

        let mut item_api = Command::new(&binaries.item_api);
        item_api
            .arg("serve")
            .arg("--config")
            .arg(&options.config)
            .env("DATABASE_URL", &app_url);
        self.start_child(
            "item-api",
            item_api,
            "TERM",
            &format!("http://{}/readyz", config.backend_listen),
            stop,
        )
        .await?;

        let mut edge_proxy = Command::new(&binaries.edge_proxy);
        edge_proxy.arg("--config").arg(&options.config);
        let proxy_ready = format!("http://{}/readyz", config.proxy_admin_listen);
        // SIGINT is Pingora's fast stop. SIGTERM would wait out the whole
        // grace period, which a development stack does not need.
        self.start_child("edge-proxy", edge_proxy, "INT", &proxy_ready, stop)
            .await?;

        // Step 4: tokens and the lines to paste.
        let mut users = Vec::new();
        for user in &DEMO_USERS {
            let mut request = TokenRequest::new(user.id);
            request.email = Some(user.email.to_owned());
            request.audience = vec![config.audience.clone()];
            users.push((user, signing_key.sign(&request.claims())?));
        }
        let banner = Banner {
            proxy: config.proxy_listen[0],
            proxy_admin: config.proxy_admin_listen,
            hanko: config.hanko_listen,
            backend: config.backend_listen,
            postgres: (postgres.0, &postgres.1),
            users,
            item_of_a,
            token_command: format!(
                "{} token --data-dir {} --aud {}",
                binaries.hanko_dev.display(),
                hanko_dir.display(),
                config.audience
            ),
            data_dir: &options.data_dir,
        };
        print!("{}", banner.render());
        Ok(())
    }

    async fn start_child(
        &mut self,
        name: &'static str,
        command: Command,
        stop_signal: &'static str,
        health_url: &str,
        stop: &StopRequest,
    ) -> Result<()> {
        let child = Supervised::spawn(name, command, stop_signal)?;
        self.children.push(child);
        self.children
            .last_mut()
            .expect("a child was pushed just now")
            .wait_healthy(health_url, stop)
            .await
    }

    /// Step 5: waits for SIGINT, SIGTERM, SIGHUP or the first child to exit.
    async fn run_until_stopped(&mut self, mut stop: StopRequest) -> Result<()> {
        let exited = futures::future::select_all(
            self.children
                .iter_mut()
                .map(|child| Box::pin(async move { (child.name(), child.wait().await) })),
        );
        tokio::select! {
            signal = stop.wait_for(Option::is_some) => {
                let signal = signal.ok().and_then(|signal| *signal).unwrap_or("stop");
                say(&format!("{signal} received; stopping the stack"));
                Ok(())
            }
            ((name, status), _, _) = exited => {
                let status = status.map_or_else(|error| format!("{error:#}"), |s| s.to_string());
                bail!("{name} exited on its own ({status}); its log is above")
            }
        }
    }

    /// Stops everything in reverse start order: the children by PID, then
    /// PostgreSQL with `pg_ctl stop`.
    async fn shut_down(&mut self) {
        while let Some(mut child) = self.children.pop() {
            child.stop().await;
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await;
        }
    }
}

/// Installs the handlers for the signals that stop the stack. SIGHUP, which
/// a closing terminal sends, is one of them because the children run in
/// their own process groups and would outlive a killed `up`.
fn listen_for_stop_signals() -> Result<StopRequest> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    let (sender, receiver) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
            if sender.borrow().is_some() {
                say(&format!("{name} received again; still stopping"));
            }
            sender.send_replace(Some(name));
        }
    });
    Ok(receiver)
}

fn check_stop(stop: &StopRequest) -> Result<()> {
    match *stop.borrow() {
        Some(signal) => bail!("{signal} received during start-up; stopping"),
        None => Ok(()),
    }
}

fn prepare_data_dir(data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    // Keeps keys and passwords out of git even where the project's own
    // .gitignore does not list this directory.
    let ignore = data_dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "*\n").with_context(|| format!("writing {}", ignore.display()))?;
    }
    Ok(())
}

async fn reset(data_dir: &Path, tools: PgTools) -> Result<()> {
    say(&format!(
        "--reset: deleting the data of earlier runs in {}",
        data_dir.display()
    ));
    postgres::remove_cluster(data_dir, tools).await?;
    let hanko_dir = data_dir.join(HANKO_SUBDIR);
    if hanko_dir.exists() {
        std::fs::remove_dir_all(&hanko_dir)
            .with_context(|| format!("removing {}", hanko_dir.display()))?;
    }
    let password = data_dir.join(AUTHENTICATOR_PASSWORD_FILE);
    if password.exists() {
        std::fs::remove_file(&password)
            .with_context(|| format!("removing {}", password.display()))?;
    }
    Ok(())
}

/// Lets edge-proxy validate the config before anything starts, so a bad
/// key is reported with edge-proxy's own message.
async fn check_edge_proxy_config(binaries: &StackBinaries, config: &Path) -> Result<()> {
    let output = Command::new(&binaries.edge_proxy)
        .arg("check")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} check failed", binaries.edge_proxy.display()))?;
    if !output.status.success() {
        print_output("edge-proxy", &output.stdout);
        print_output("edge-proxy", &output.stderr);
        bail!(
            "`edge-proxy check --config {}` exited with {}; fix the key it names above",
            config.display(),
            output.status
        );
    }
    Ok(())
}

async fn run_migrations(binaries: &StackBinaries, config: &Path, admin_url: &str) -> Result<()> {
    let output = Command::new(&binaries.item_api)
        .arg("migrate")
        .arg("--config")
        .arg(config)
        // In the environment, the password stays out of other users' `ps`.
        .env("ITEM_API_MIGRATE_URL", admin_url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} migrate failed", binaries.item_api.display()))?;
    print_output("item-api", &output.stdout);
    print_output("item-api", &output.stderr);
    if !output.status.success() {
        bail!(
            "`item-api migrate` exited with {}; its output is above",
            output.status
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sighup_requests_a_stop() {
        // A handler of the test's own keeps SIGHUP from ending the test
        // process when `listen_for_stop_signals` does not handle it.
        let _keep_alive = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
        let mut stop = listen_for_stop_signals().expect("installing the stop handlers");

        children::send_signal(std::process::id(), "HUP");
        let received =
            tokio::time::timeout(Duration::from_secs(10), stop.wait_for(Option::is_some))
                .await
                .expect("no stop request within 10 s of SIGHUP")
                .map(|signal| *signal)
                .expect("the signal task is running");

        assert_eq!(received, Some("SIGHUP"));
    }
}
