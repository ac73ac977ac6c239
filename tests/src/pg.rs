//! A private PostgreSQL cluster for tests, and a fresh database per test.
//!
//! [`PgCluster::start`] runs `initdb` into a temp dir under `/tmp` and starts
//! the server on a free 127.0.0.1 port with its unix socket in that dir.
//! When the tests run as root, every PostgreSQL command runs as the
//! `postgres` OS user (PostgreSQL refuses to run as root).
//!
//! Every cluster also gets a watchdog: a small shell child whose stdin is a
//! pipe from the test process. When the pipe closes, because the cluster was
//! dropped or the test process ended in any way, the watchdog stops the
//! server with `pg_ctl stop` and removes the temp dir. This is what stops
//! [`PgCluster::shared`], which lives in a static and is never dropped.
//!
//! This module does not install PostgreSQL; it panics with the package to
//! install when the binaries are missing.

use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::process::{binary_path, free_loopback_addr};

/// How long PostgreSQL may take to accept connections after starting.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Superuser created by `initdb`; it owns every object the migrations create.
pub const ADMIN_USER: &str = "postgres";

/// Role item-api logs in as, created by the migrations.
pub const AUTHENTICATOR_USER: &str = "authenticator";

/// Database migrated once per cluster and cloned for each test.
const TEMPLATE_DATABASE: &str = "item_api_template";

/// OS user that runs PostgreSQL when the tests run as root.
const POSTGRES_OS_USER: &str = "postgres";

/// How many times a start is retried when the chosen port was taken.
const START_ATTEMPTS: usize = 3;

/// Stops the server and removes the temp dir once stdin reaches EOF.
/// Arguments: pg_ctl path, data dir, base dir, OS user (empty for none),
/// runuser path. Signals are ignored so Ctrl-C on the test run cannot skip
/// the cleanup.
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT TERM HUP
pg_ctl=$1 data=$2 base=$3 user=$4 runuser=$5
cat >/dev/null
run() { if [ -n "$user" ]; then "$runuser" -u "$user" -- "$@"; else "$@"; fi; }
if [ -f "$data/postmaster.pid" ]; then
    run "$pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null 2>&1 ||
        run "$pg_ctl" stop -D "$data" -m immediate -w -t 30 >/dev/null 2>&1
fi
rm -rf "$base"
"#;

/// A running PostgreSQL server in a temp dir, stopped when dropped and,
/// through its watchdog, when the test process exits.
pub struct PgCluster {
    port: u16,
    base_dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    bin_dir: PathBuf,
    run_as_postgres: bool,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    template: tokio::sync::OnceCell<()>,
    next_database: AtomicU64,
}

/// One fresh database in a [`PgCluster`], with URLs for the superuser and
/// for `authenticator`.
///
/// The database is left in place when dropped; it goes away with the
/// cluster's temp dir.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// Database name.
    pub name: String,
    /// URL of the superuser [`ADMIN_USER`] on this database.
    pub admin_url: String,
    /// URL of [`AUTHENTICATOR_USER`] on this database (no password: the
    /// cluster trusts loopback connections).
    pub authenticator_url: String,
    /// Port of the cluster on 127.0.0.1.
    pub port: u16,
}

impl PgCluster {
    /// Returns the cluster shared by every test in this test binary,
    /// starting it on first use.
    ///
    /// # Panics
    ///
    /// Panics as [`PgCluster::start`] does.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start)
    }

    /// Starts a new private cluster, for tests that stop or reconfigure it.
    ///
    /// # Panics
    ///
    /// Panics when the PostgreSQL binaries are missing (naming the Debian
    /// package `postgresql`), when `initdb` fails, or with the server log
    /// when the server is not ready within [`READY_DEADLINE`].
    pub fn start() -> PgCluster {
        let bin_dir = find_bin_dir();
        let run_as_postgres = running_as_root();
        if run_as_postgres {
            check_postgres_user();
        }

        let base_dir = tempfile::Builder::new()
            .prefix("hanko-edge-pg-")
            .tempdir_in("/tmp")
            .expect("creating a temp dir under /tmp must work")
            .keep();
        let data_dir = base_dir.join("data");
        let log_path = base_dir.join("server.log");
        if run_as_postgres {
            run_checked(
                Command::new("chown").arg(POSTGRES_OS_USER).arg(&base_dir),
                "chown of the cluster dir",
            );
        }

        let mut cluster = PgCluster {
            port: 0,
            base_dir,
            data_dir,
            log_path,
            bin_dir,
            run_as_postgres,
            watchdog: Mutex::new(None),
            template: tokio::sync::OnceCell::new(),
            next_database: AtomicU64::new(0),
        };
        cluster.spawn_watchdog();
        cluster.init();
        cluster.start_server();
        cluster
    }

    /// Returns the port of the server on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the URL of `user` on `database` (no password: the cluster
    /// trusts loopback connections).
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// Returns the server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Creates an empty database, without migrations.
    ///
    /// # Panics
    ///
    /// Panics when the database cannot be created.
    pub async fn create_database(&self) -> TestDatabase {
        let name = self.next_database_name();
        self.execute_admin(&format!("create database {name}")).await;
        self.test_database(name)
    }

    /// Creates a database with every migration applied, cloned from a
    /// template that `item-api migrate` prepared once for this cluster.
    ///
    /// # Panics
    ///
    /// Panics when the item-api binary is missing, the migration fails or
    /// the database cannot be created.
    pub async fn create_migrated_database(&self) -> TestDatabase {
        self.template
            .get_or_init(|| async {
                self.execute_admin(&format!("create database {TEMPLATE_DATABASE}"))
                    .await;
                let output = run_migrate(&self.url(ADMIN_USER, TEMPLATE_DATABASE)).await;
                assert_migrate_succeeded(&output);
            })
            .await;

        let name = self.next_database_name();
        self.execute_admin(&format!(
            "create database {name} template {TEMPLATE_DATABASE}"
        ))
        .await;
        self.test_database(name)
    }

    /// Makes the server ask `role` for its password on TCP connections
    /// (scram-sha-256) instead of trusting them, and reloads it. Every
    /// other role stays trusted.
    ///
    /// # Panics
    ///
    /// Panics when pg_hba.conf cannot be rewritten or `pg_ctl reload` fails.
    pub fn require_password(&self, role: &str) {
        let hba_path = self.data_dir.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba_path).expect("reading pg_hba.conf must work");
        // The first matching line decides, so the new rule goes on top.
        std::fs::write(
            &hba_path,
            format!("host all {role} 127.0.0.1/32 scram-sha-256\n{rules}"),
        )
        .expect("writing pg_hba.conf must work");
        let mut command = self.pg_command("pg_ctl");
        command.arg("reload").arg("-D").arg(&self.data_dir);
        run_checked(&mut command, "pg_ctl reload");
    }

    /// Stops the server (fast shutdown) but keeps the data dir, so tests can
    /// see how clients behave while the database is down. Safe to repeat.
    ///
    /// # Panics
    ///
    /// Panics with the server log when `pg_ctl stop` fails.
    pub fn stop(&self) {
        if !self.data_dir.join("postmaster.pid").exists() {
            return;
        }
        let mut command = self.pg_command("pg_ctl");
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "30"]);
        let output = command.output().expect("running pg_ctl stop must work");
        assert!(
            output.status.success(),
            "pg_ctl stop failed: {}\n--- server log ---\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    fn next_database_name(&self) -> String {
        let number = self.next_database.fetch_add(1, Ordering::Relaxed);
        format!("test_{number}")
    }

    fn test_database(&self, name: String) -> TestDatabase {
        TestDatabase {
            admin_url: self.url(ADMIN_USER, &name),
            authenticator_url: self.url(AUTHENTICATOR_USER, &name),
            port: self.port,
            name,
        }
    }

    /// Runs one statement as the superuser on the `postgres` database.
    async fn execute_admin(&self, statement: &str) {
        let url = self.url(ADMIN_USER, "postgres");
        let mut connection = PgConnection::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("connecting to {url} failed: {error}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("`{statement}` failed: {error}"));
        let _ = connection.close().await;
    }

    /// Builds a command for a PostgreSQL program, run as the `postgres` OS
    /// user when the tests run as root.
    fn pg_command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        if self.run_as_postgres {
            let mut command = Command::new(runuser());
            command.args(["-u", POSTGRES_OS_USER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn spawn_watchdog(&mut self) {
        let user = if self.run_as_postgres {
            POSTGRES_OS_USER
        } else {
            ""
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pg-watchdog")
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(&self.base_dir)
            .arg(user)
            .arg(runuser())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the cluster watchdog (sh) must work");
        let stdin = child.stdin.take().expect("stdin was piped");
        *self.watchdog.get_mut().expect("not poisoned") = Some((child, stdin));
    }

    fn init(&self) {
        let mut command = self.pg_command("initdb");
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", ADMIN_USER, "--auth=trust", "--encoding=UTF8"])
            .args(["--no-locale", "--no-sync", "--no-instructions"]);
        run_checked(&mut command, "initdb");
    }

    fn start_server(&mut self) {
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_loopback_addr().port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {socket_dir} \
                 -c max_connections=200 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off",
                port = self.port,
                socket_dir = self.base_dir.display(),
            );
            let mut command = self.pg_command("pg_ctl");
            command
                .arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_path)
                .arg("-W")
                .arg("-o")
                .arg(options);
            run_checked(&mut command, "pg_ctl start");

            match self.wait_ready() {
                Ok(()) => return,
                Err(reason) if attempt < START_ATTEMPTS && self.port_was_taken() => {
                    eprintln!("PostgreSQL start attempt {attempt} failed ({reason}); retrying");
                }
                Err(reason) => panic!(
                    "PostgreSQL in {} did not start: {reason}\n--- server log ---\n{}",
                    self.data_dir.display(),
                    self.log()
                ),
            }
        }
    }

    /// Polls until `postmaster.pid` reports "ready" and the port accepts
    /// TCP connections, or the server exits, or the deadline passes.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        let pid_file = self.data_dir.join("postmaster.pid");
        let mut seen_pid_file = false;
        loop {
            match std::fs::read_to_string(&pid_file) {
                Ok(contents) => {
                    seen_pid_file = true;
                    // Line 8 of postmaster.pid is the server status, which
                    // PostgreSQL (10 and later) sets to "ready" once it
                    // accepts connections; pg_ctl -w reads the same line.
                    let ready = contents.lines().nth(7).map(str::trim) == Some("ready");
                    if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                        return Ok(());
                    }
                }
                Err(_) if seen_pid_file => {
                    return Err("the server exited during startup".into());
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {READY_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn port_was_taken(&self) -> bool {
        self.log().contains("could not bind")
    }
}

impl Drop for PgCluster {
    /// Closes the watchdog's stdin and waits while it stops the server and
    /// removes the temp dir.
    fn drop(&mut self) {
        let watchdog = self.watchdog.get_mut().ok().and_then(Option::take);
        if let Some((mut child, stdin)) = watchdog {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl TestDatabase {
    /// Creates a migrated database in the [shared](PgCluster::shared)
    /// cluster.
    ///
    /// # Panics
    ///
    /// Panics as [`PgCluster::create_migrated_database`] does.
    pub async fn new() -> TestDatabase {
        PgCluster::shared().create_migrated_database().await
    }

    /// Opens a connection as the superuser.
    ///
    /// # Panics
    ///
    /// Panics when the connection fails.
    pub async fn admin(&self) -> PgConnection {
        connect(&self.admin_url).await
    }

    /// Opens a connection as `authenticator`.
    ///
    /// # Panics
    ///
    /// Panics when the connection fails.
    pub async fn authenticator(&self) -> PgConnection {
        connect(&self.authenticator_url).await
    }
}

/// Runs `item-api migrate --database-url <url>` and returns its output.
///
/// # Panics
///
/// Panics when the binary is missing or cannot be started.
pub async fn run_migrate(database_url: &str) -> std::process::Output {
    tokio::process::Command::new(binary_path("item-api"))
        .arg("migrate")
        .arg("--database-url")
        .arg(database_url)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("starting item-api migrate must work")
}

/// Asserts that an `item-api migrate` run exited 0, printing its output
/// otherwise.
///
/// # Panics
///
/// Panics when the run failed.
pub fn assert_migrate_succeeded(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "item-api migrate failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|error| panic!("connecting to {url} failed: {error}"))
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: the one
/// `initdb` on PATH resolves to, else the newest /usr/lib/postgresql/*/bin.
fn find_bin_dir() -> PathBuf {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|program| dir.join(program).is_file())
    };

    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|dir| has_all(dir));
    if let Some(dir) = on_path {
        return dir;
    }

    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_all(dir))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH \
             or in /usr/lib/postgresql/*/bin; install the Debian package `postgresql` \
             (apt-get install postgresql)"
        ),
    }
}

/// Returns whether the effective user is root: `/proc/self` is owned by the
/// effective uid of the process reading it.
fn running_as_root() -> bool {
    match std::fs::metadata("/proc/self") {
        Ok(metadata) => metadata.uid() == 0,
        Err(_) => {
            let output = Command::new("id")
                .arg("-u")
                .output()
                .expect("running id -u must work");
            String::from_utf8_lossy(&output.stdout).trim() == "0"
        }
    }
}

fn check_postgres_user() {
    let exists = Command::new("id")
        .arg(POSTGRES_OS_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        exists,
        "the tests run as root, so PostgreSQL must run as the OS user `{POSTGRES_OS_USER}`, \
         which does not exist; install the Debian package `postgresql`, which creates it"
    );
}

fn run_checked(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("starting {what} ({command:?}) failed: {error}"));
    if !output.status.success() {
        let _ = std::io::stderr().flush();
        panic!(
            "{what} failed with {}\ncommand: {command:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// Finds `runuser`, which lives in /usr/sbin and so is missing from the
/// PATH of many non-login root shells (`su` without `-`, cron).
fn runuser() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("runuser"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}
