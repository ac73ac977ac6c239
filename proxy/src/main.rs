//! edge-proxy: a Pingora reverse proxy that forwards a request only with a
//! valid Hanko session token and passes the verified user id upstream.
//!
//! `main` reads as the list of start-up steps; each step lives in its own
//! module. TLS termination is not done here: run the proxy behind a TLS
//! terminator or on a trusted network.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::Parser as _;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use edge_proxy::admin::AdminApp;
use edge_proxy::auth::jwks::KeySource;
use edge_proxy::cli::{Cli, Command};
use edge_proxy::config::Config;
use edge_proxy::drain::DrainWatch;
use edge_proxy::listener;
use edge_proxy::logging;
use edge_proxy::refresher::KeyRefresher;
use edge_proxy::reload::{self, ConfigReloader};
use edge_proxy::runtime::Runtime;
use edge_proxy::service::EdgeProxy;
use edge_proxy::upgrade_socket;

/// jemalloc instead of glibc's allocator. Every request allocates and frees
/// Pingora's header maps, buffers and futures. Under load glibc's `malloc`
/// and `free` took about a tenth of the proxy's CPU, and jemalloc cut the
/// CPU per request by 5 to 10 %. mimalloc saved as much but added about
/// 13 MiB to the RSS of 1,000 idle connections, jemalloc about 4 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // 1. Arguments and logging.
    let cli = Cli::parse();
    logging::init(cli.log_format);

    // 2. to 6., then write out the buffered access lines, which would be
    //    lost at exit.
    let status = run(&cli);
    logging::flush();
    status
}

/// Checks the config or serves until a signal stops the server.
fn run(cli: &Cli) -> ExitCode {
    // 2. One crypto backend for token signatures, whatever features other
    //    crates enable.
    if jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
        .install_default()
        .is_err()
    {
        tracing::debug!("a jsonwebtoken crypto provider was already installed");
    }

    // 3. Config, validated the same way for `check` and for serving.
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("edge-proxy: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Check) = cli.command {
        println!(
            "edge-proxy: {} is valid ({} routes, key set {})",
            cli.config.display(),
            config.routes.len(),
            config.auth.jwks_url
        );
        return ExitCode::SUCCESS;
    }

    // 4. Every address must be free now: Pingora would retry for about 30 s
    //    and then keep running without a listener.
    if !cli.upgrade
        && let Err(error) = check_binds(&config)
    {
        eprintln!("edge-proxy: {error:#}");
        return ExitCode::FAILURE;
    }

    // 5. The upgrade socket's directory must be this user's alone, because
    //    the listening sockets go to any process listening on that path.
    if let Err(error) = upgrade_socket::prepare(&config.upgrade_socket) {
        eprintln!("edge-proxy: {error:#}");
        return ExitCode::FAILURE;
    }

    // 6. From here on SIGHUP reloads the config instead of ending the
    //    process.
    if let Err(error) = reload::install_hangup_handler() {
        eprintln!("edge-proxy: {error:#}");
        return ExitCode::FAILURE;
    }

    // 7. Services, then run until a signal stops the server.
    match build_server(&cli.config, &config, cli.upgrade) {
        Ok(server) => {
            tracing::info!(
                listen = ?config.listen,
                admin_listen = %config.admin_listen,
                worker_threads = config.worker_threads,
                routes = config.routes.len(),
                jwks_url = %config.auth.jwks_url,
                "edge-proxy starting"
            );
            // `run` returns after a stop, unlike `run_forever`, which would
            // exit before the log lines are flushed.
            server.run(RunArgs::default());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("edge-proxy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every listen address to fail fast on a taken port. The sockets
/// stay open until all are bound, so two addresses that cannot both be
/// bound fail here too.
fn check_binds(config: &Config) -> anyhow::Result<()> {
    let addresses = config
        .listen
        .iter()
        .map(|address| ("proxy.listen", *address))
        .chain(std::iter::once(("proxy.admin_listen", config.admin_listen)));
    let mut bound = Vec::new();
    for (key, address) in addresses {
        let listener = TcpListener::bind(address).with_context(|| {
            format!("cannot listen on {key} = \"{address}\"; is another process using it?")
        })?;
        bound.push(listener);
    }
    Ok(())
}

/// Builds the Pingora server with the proxy, admin, key refresh, config
/// reload and graceful stop services.
fn build_server(config_path: &Path, config: &Config, upgrade: bool) -> anyhow::Result<Server> {
    let server_conf = ServerConf {
        threads: config.worker_threads,
        upgrade_sock: config.upgrade_socket.path().to_string_lossy().into_owned(),
        grace_period_seconds: Some(config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.shutdown_timeout.as_secs()),
        upstream_keepalive_pool_size: config.upstream_keepalive_pool_size,
        ..ServerConf::default()
    };
    let options = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(options, server_conf);
    server.bootstrap();

    let keys = KeySource::new(
        config.auth.jwks_url.clone(),
        config.auth.policy.algorithms.clone(),
        config.auth.jwks,
    )
    .with_context(|| format!("preparing the key source for {}", config.auth.jwks_url))?;
    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::new(config, Arc::new(keys))));

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        EdgeProxy::new(runtime.clone()),
        "edge-proxy",
    );
    for address in &config.listen {
        proxy.add_listener(listener::tcp(*address));
    }

    let mut admin = Service::new("admin".to_owned(), AdminApp::new(runtime.clone()));
    admin.add_tcp(&config.admin_listen.to_string());
    admin.threads = Some(1);

    let refresher = KeyRefresher::new(runtime.clone());
    let reloader = ConfigReloader::new(
        config_path.to_path_buf(),
        config.clone(),
        runtime,
        refresher.source_changed(),
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service("key set refresh", refresher));
    server.add_service(background_service("config reload", reloader));
    server.add_service(background_service(
        "graceful stop",
        DrainWatch::new(config.grace_period),
    ));
    Ok(server)
}
