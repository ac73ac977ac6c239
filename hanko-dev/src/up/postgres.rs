//! The private PostgreSQL cluster of `hanko-dev up`: finding the server
//! programs, choosing a data directory the server may use, `initdb` on the
//! first run, and `pg_ctl start`/`stop` on a loopback port.
//!
//! PostgreSQL refuses to run as root, so when `up` runs as root every
//! server program runs as the `postgres` OS user through `runuser`. That
//! user must be able to reach the cluster directory. When a parent such as
//! a 0700 `/root` blocks it, the cluster moves to `/var/tmp`, and the data
//! directory records that choice. This module never touches a cluster
//! it did not create.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use super::children::{drain_output, forward_output, print_output, say};
use super::files::{read_or_create_secret, read_trimmed, write_private};
use super::ownership::{Owner, create_owned_dir};

/// The Debian package that provides `initdb` and `pg_ctl`.
pub const DEBIAN_PACKAGE: &str = "postgresql";

/// The oldest PostgreSQL major version the schema is tested with.
const MIN_MAJOR_VERSION: u32 = 15;

/// Parent directory for clusters that the `postgres` user cannot keep in
/// the data directory, with one subdirectory per project data directory.
const FALLBACK_PARENT: &str = "/var/tmp";

const LOCATION_FILE: &str = "postgres-location";
const PORT_FILE: &str = "postgres-port";
const PASSWORD_FILE: &str = "postgres-password";
const CLUSTER_DIR: &str = "postgres";

/// The PostgreSQL server programs `up` needs.
#[derive(Debug, Clone)]
pub struct PgTools {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl PgTools {
    /// Finds `initdb` and `pg_ctl` on `PATH`, else in the newest
    /// `/usr/lib/postgresql/*/bin`.
    ///
    /// # Errors
    ///
    /// Fails, naming the Debian package to install, when they are missing.
    pub fn find() -> Result<Self> {
        let mut dirs = path_dirs();
        dirs.extend(debian_bin_dirs());
        Self::find_in(&dirs)
    }

    fn find_in(dirs: &[PathBuf]) -> Result<Self> {
        for dir in dirs {
            let initdb = dir.join("initdb");
            let pg_ctl = dir.join("pg_ctl");
            if initdb.is_file() && pg_ctl.is_file() {
                let tools = Self { initdb, pg_ctl };
                tools.warn_if_old();
                return Ok(tools);
            }
        }
        bail!(
            "PostgreSQL's server programs (initdb, pg_ctl) are not on PATH or in \
             /usr/lib/postgresql/*/bin; install them with `apt-get install {DEBIAN_PACKAGE}` \
             (Debian, version {MIN_MAJOR_VERSION} or newer)"
        )
    }

    fn warn_if_old(&self) {
        let Ok(output) = std::process::Command::new(&self.pg_ctl)
            .arg("--version")
            .output()
        else {
            return;
        };
        // `pg_ctl (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)`
        let text = String::from_utf8_lossy(&output.stdout);
        let major = text
            .split_whitespace()
            .nth(2)
            .and_then(|version| version.split('.').next())
            .and_then(|major| major.parse::<u32>().ok());
        if let Some(major) = major.filter(|major| *major < MIN_MAJOR_VERSION) {
            say(&format!(
                "warning: {} is PostgreSQL {major}; hanko-edge is tested with {MIN_MAJOR_VERSION} \
                 or newer",
                self.pg_ctl.display()
            ));
        }
    }
}

/// A cluster directory with its port and superuser password.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    superuser_password: String,
    as_postgres_user: bool,
    tools: PgTools,
}

impl Cluster {
    /// Chooses the cluster directory for `data_dir`, creates the cluster on
    /// the first run, and picks its port: the last run's when still free.
    ///
    /// # Errors
    ///
    /// Fails when a directory cannot be created or `initdb` fails.
    pub async fn prepare(data_dir: &Path, tools: PgTools) -> Result<Self> {
        let as_postgres_user = running_as_root()?;
        let dir = cluster_dir(data_dir, as_postgres_user).await?;
        let password_path = data_dir.join(PASSWORD_FILE);

        let cluster_exists = dir.join("PG_VERSION").is_file();
        if cluster_exists && !password_path.is_file() {
            bail!(
                "the cluster in {} exists but its password file {} is missing; start afresh \
                 with `hanko-dev up --reset`",
                dir.display(),
                password_path.display()
            );
        }
        let superuser_password = read_or_create_secret(&password_path)?;

        let mut cluster = Self {
            dir,
            port: 0,
            superuser_password,
            as_postgres_user,
            tools,
        };
        if cluster_exists {
            say(&format!(
                "reusing the PostgreSQL cluster in {}",
                cluster.dir.display()
            ));
        } else {
            cluster.init().await?;
        }
        cluster.port = choose_port(&data_dir.join(PORT_FILE))?;
        Ok(cluster)
    }

    /// Finds the cluster of an earlier run of `data_dir`, if there is one.
    ///
    /// # Errors
    ///
    /// Fails when the recorded location cannot be read.
    pub fn existing(data_dir: &Path, tools: PgTools) -> Result<Option<Self>> {
        let dir = match read_trimmed(&data_dir.join(LOCATION_FILE))? {
            Some(recorded) => PathBuf::from(recorded),
            None => data_dir.join(CLUSTER_DIR),
        };
        if !dir.join("PG_VERSION").is_file() {
            return Ok(None);
        }
        Ok(Some(Self {
            dir,
            port: 0,
            superuser_password: String::new(),
            as_postgres_user: running_as_root()?,
            tools,
        }))
    }

    /// Returns the cluster's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns a connection URL for the `postgres` superuser and `database`.
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}?sslmode=disable",
            self.superuser_password, self.port
        )
    }

    /// Starts the server with `pg_ctl start` and returns the postmaster's
    /// PID. A server left running by an earlier run that was killed is
    /// stopped first, because its port is unknown.
    ///
    /// # Errors
    ///
    /// Fails when `pg_ctl` fails; the server log has been printed above.
    pub async fn start(&self) -> Result<u32> {
        if self.is_running().await? {
            say("PostgreSQL from an earlier run is still running on this cluster; stopping it");
            self.stop().await;
        }

        let mut command = self.command(&self.tools.pg_ctl);
        command
            .arg("start")
            .arg("-D")
            .arg(&self.dir)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("running {command:?} failed"))?;
        // The server inherits these pipes, so its log keeps flowing here
        // after pg_ctl itself has exited.
        let mut forwarders = forward_output("postgres", &mut child);
        let status = child.wait().await.context("waiting for pg_ctl failed")?;
        if !status.success() {
            // A server that failed to start has usually closed the pipes
            // too, so its last lines come before the error. One still
            // running after a start timeout keeps them open for the drain's
            // whole bound.
            drain_output(&mut forwarders).await;
            bail!(
                "`pg_ctl start` on {} exited with {status}; the PostgreSQL log is above",
                self.dir.display()
            );
        }

        let pid_file = self.dir.join("postmaster.pid");
        let pid = read_trimmed(&pid_file)?
            .and_then(|text| {
                text.lines()
                    .next()
                    .and_then(|line| line.trim().parse().ok())
            })
            .with_context(|| format!("{} holds no PID", pid_file.display()))?;
        say(&format!(
            "started PostgreSQL (PID {pid}) on 127.0.0.1:{}, data in {}",
            self.port,
            self.dir.display()
        ));
        Ok(pid)
    }

    /// Stops the server with `pg_ctl stop -m fast`; a server that is not
    /// running is left alone. Failures are printed, not returned, because
    /// stopping is best effort on the way out.
    pub async fn stop(&self) {
        let mut command = self.command(&self.tools.pg_ctl);
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "-w", "-t", "60"])
            .stdin(Stdio::null())
            .process_group(0);
        match command.output().await {
            Ok(output) if output.status.success() => {
                say(&format!("stopped PostgreSQL ({})", self.dir.display()));
            }
            Ok(output) => {
                print_output("pg_ctl", &output.stdout);
                print_output("pg_ctl", &output.stderr);
            }
            Err(error) => say(&format!("running pg_ctl stop failed: {error}")),
        }
    }

    async fn is_running(&self) -> Result<bool> {
        let status = self
            .command(&self.tools.pg_ctl)
            .arg("status")
            .arg("-D")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running pg_ctl status failed")?;
        // pg_ctl status exits 0 when a server runs on the directory.
        Ok(status.success())
    }

    async fn init(&self) -> Result<()> {
        say(&format!(
            "creating a PostgreSQL cluster in {}",
            self.dir.display()
        ));
        let password_file = tempfile::NamedTempFile::new()
            .context("creating a temp file for initdb's password failed")?;
        std::fs::write(password_file.path(), &self.superuser_password)
            .context("writing initdb's password file failed")?;
        if self.as_postgres_user {
            let owner = Owner::postgres()?;
            std::os::unix::fs::fchown(password_file.as_file(), Some(owner.uid), Some(owner.gid))
                .context("handing initdb's password file to the postgres OS user failed")?;
        }

        let output = self
            .command(&self.tools.initdb)
            .arg("-D")
            .arg(&self.dir)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .arg(format!("--pwfile={}", password_file.path().display()))
            .stdin(Stdio::null())
            .output()
            .await
            .context("running initdb failed")?;
        print_output("initdb", &output.stdout);
        print_output("initdb", &output.stderr);
        if !output.status.success() {
            bail!(
                "initdb into {} exited with {}",
                self.dir.display(),
                output.status
            );
        }

        // TCP on loopback only, and no Unix socket, so this cluster cannot
        // clash with a system PostgreSQL's socket in /var/run/postgresql.
        let conf = self.dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("reading {}", conf.display()))?;
        text.push_str(
            "\n# Added by `hanko-dev up`: loopback TCP only, no Unix socket.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\n",
        );
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))
    }

    fn command(&self, program: &Path) -> Command {
        as_postgres_command(program, self.as_postgres_user)
    }
}

/// Removes everything `up` keeps for `data_dir`'s cluster, stopping a
/// server left running first.
///
/// # Errors
///
/// Fails when a directory cannot be removed.
pub async fn remove_cluster(data_dir: &Path, tools: PgTools) -> Result<()> {
    if let Some(cluster) = Cluster::existing(data_dir, tools)?
        && cluster.is_running().await?
    {
        say("stopping PostgreSQL left running by an earlier run");
        cluster.stop().await;
    }

    if let Some(recorded) = read_trimmed(&data_dir.join(LOCATION_FILE))? {
        // Removes the per-project directory, never anything above it.
        if let Some(dir) = fallback_project_dir(Path::new(&recorded)) {
            remove_dir_if_present(dir)?;
        }
    }
    remove_dir_if_present(&data_dir.join(CLUSTER_DIR))?;
    for file in [LOCATION_FILE, PORT_FILE, PASSWORD_FILE] {
        let path = data_dir.join(file);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Returns the per-project directory of a cluster directory in the fallback
/// layout, `<FALLBACK_PARENT>/hanko-edge-<hash>/postgres`, else `None`.
fn fallback_project_dir(cluster: &Path) -> Option<&Path> {
    cluster.parent().filter(|parent| {
        parent.parent() == Some(Path::new(FALLBACK_PARENT))
            && parent
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("hanko-edge-"))
    })
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Returns whether this process runs as root, by asking `id -u`.
///
/// # Errors
///
/// Fails when `id` cannot be run.
pub fn running_as_root() -> Result<bool> {
    let output = std::process::Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u` failed")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn as_postgres_command(program: &Path, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut command = Command::new(runuser());
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default()
}

/// Finds `runuser`, which lives in /usr/sbin and so is missing from the
/// PATH of many non-login shells.
fn runuser() -> PathBuf {
    let mut dirs = path_dirs();
    dirs.extend([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    dirs.into_iter()
        .map(|dir| dir.join("runuser"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_unstable_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

/// Picks the directory the cluster lives in and makes sure the user that
/// runs PostgreSQL owns it.
async fn cluster_dir(data_dir: &Path, as_postgres_user: bool) -> Result<PathBuf> {
    let location_file = data_dir.join(LOCATION_FILE);
    if let Some(recorded) = read_trimmed(&location_file)? {
        let dir = PathBuf::from(recorded);
        if as_postgres_user {
            let owner = Owner::postgres()?;
            // The project directory is checked too, because /var/tmp may have
            // been emptied since the last run and another user may have
            // created it since.
            if let Some(project_dir) = fallback_project_dir(&dir) {
                create_owned_dir(project_dir, Owner::ROOT, 0o755)?;
            }
            create_owned_dir(&dir, owner, 0o700)?;
        }
        return Ok(dir);
    }

    let preferred = data_dir.join(CLUSTER_DIR);
    if !as_postgres_user {
        std::fs::create_dir_all(&preferred)
            .with_context(|| format!("creating {}", preferred.display()))?;
        return Ok(preferred);
    }

    let owner = Owner::postgres()?;
    create_owned_dir(&preferred, owner, 0o700)?;
    if postgres_can_use(&preferred).await? {
        return Ok(preferred);
    }

    // The postgres user cannot reach the project directory (for example a
    // clone under a 0700 /root), so use a directory it can reach, keyed by
    // the project path so each checkout keeps its own cluster.
    let _ = std::fs::remove_dir(&preferred);
    let canonical = std::fs::canonicalize(data_dir)
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    let parent = Path::new(FALLBACK_PARENT).join(format!(
        "hanko-edge-{:016x}",
        fnv1a(canonical.as_os_str().as_encoded_bytes())
    ));
    let fallback = parent.join(CLUSTER_DIR);
    create_owned_dir(&parent, Owner::ROOT, 0o755)?;
    create_owned_dir(&fallback, owner, 0o700)?;
    if !postgres_can_use(&fallback).await? {
        bail!(
            "the postgres OS user can reach neither {} nor {}; make one of them reachable \
             (every parent directory needs the x permission for others)",
            preferred.display(),
            fallback.display()
        );
    }
    write_private(&location_file, &fallback.display().to_string())?;
    say(&format!(
        "the postgres OS user cannot reach {}, so the cluster lives in {} (recorded in {})",
        preferred.display(),
        fallback.display(),
        location_file.display()
    ));
    Ok(fallback)
}

async fn postgres_can_use(dir: &Path) -> Result<bool> {
    let status = Command::new(runuser())
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .args(["-a", "-x"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running runuser (from the Debian package util-linux) failed")?;
    Ok(status.success())
}

/// Reuses the port in `port_file` when it is still free, else takes a new
/// free loopback port, and records the choice.
fn choose_port(port_file: &Path) -> Result<u16> {
    let previous = read_trimmed(port_file)?.and_then(|text| text.parse::<u16>().ok());
    let port = match previous {
        Some(port) if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() => port,
        _ => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free loopback port failed")?
            .port(),
    };
    write_private(port_file, &port.to_string())?;
    Ok(port)
}

/// FNV-1a, 64 bit: a stable hash for naming a directory after a path.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        // Reference values of the 64-bit FNV-1a test suite.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn missing_server_programs_name_the_package() {
        let empty = tempfile::tempdir().expect("temp dir");

        let error = PgTools::find_in(&[empty.path().to_path_buf()])
            .expect_err("no programs there")
            .to_string();

        assert!(error.contains("apt-get install postgresql"), "{error}");
    }

    #[test]
    fn free_recorded_port_is_reused() {
        let temp = tempfile::tempdir().expect("temp dir");
        let port_file = temp.path().join("port");

        let first = choose_port(&port_file).expect("port");
        let second = choose_port(&port_file).expect("port");

        assert_eq!(first, second);
    }

    #[test]
    fn taken_recorded_port_is_replaced() {
        let temp = tempfile::tempdir().expect("temp dir");
        let port_file = temp.path().join("port");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_port = taken.local_addr().expect("addr").port();
        std::fs::write(&port_file, taken_port.to_string()).expect("write");

        let chosen = choose_port(&port_file).expect("port");

        assert_ne!(chosen, taken_port);
        assert_eq!(
            std::fs::read_to_string(&port_file).expect("read"),
            chosen.to_string()
        );
    }
}
