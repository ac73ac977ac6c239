//! The README's run command works for a newcomer. The test starts it as
//! the README writes it, with three substitutions: the test profile's
//! `hanko-dev` in place of `cargo run --release`, a copy of `config.toml`
//! on free ports, and a temp data directory. It then runs the printed
//! `curl` lines in a shell and checks that stopping `up` by PID stops
//! everything `up` started.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hanko_edge_tests::hanko::decode_header;
use hanko_edge_tests::process::{binary_path, free_loopback_addr};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const README: &str = include_str!("../../README.md");
const ROOT_CONFIG: &str = include_str!("../../config.toml");

/// How long `up` may take from start to its printed `curl` lines: initdb,
/// migrations and three debug builds starting on a shared 2-core machine.
const BANNER_DEADLINE: Duration = Duration::from_secs(180);

/// How long `up` may take to stop: up to 10 s per child, then PostgreSQL.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// The demo users' ids, fixed in `hanko-dev up`.
const USER_A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";

/// The line that ends the banner.
const BANNER_END: &str = "Ctrl-C stops the stack";

/// How long each output reader may take to reach the end of its pipe once
/// `up` has exited.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Returns the arguments after `--` of the README's `cargo run ... -- up`.
fn readme_up_arguments() -> Vec<String> {
    let line = README
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("cargo run") && line.contains("-p hanko-dev -- up"))
        .expect("the README shows `cargo run ... -p hanko-dev -- up`");
    let words: Vec<&str> = line.split_whitespace().collect();
    let separator = words
        .iter()
        .position(|word| *word == "--")
        .expect("the run command has `--`");
    let arguments: Vec<String> = words[separator + 1..]
        .iter()
        .map(|word| (*word).to_owned())
        .collect();
    assert_eq!(arguments.first().map(String::as_str), Some("up"));
    arguments
}

/// A copy of the root `config.toml` with every listen address moved to a
/// free port, so a developer's running stack is left alone.
struct TestConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    proxy: SocketAddr,
}

impl TestConfig {
    fn new() -> TestConfig {
        let proxy = free_loopback_addr();
        let mut text = ROOT_CONFIG.to_owned();
        for (shipped, key) in [
            ("127.0.0.1:8080", "[proxy] listen"),
            ("127.0.0.1:9090", "[proxy] admin_listen"),
            ("127.0.0.1:8000", "hanko_api_url"),
            ("127.0.0.1:8081", "[backend] listen and the route upstream"),
        ] {
            assert!(
                text.contains(shipped),
                "config.toml no longer uses {shipped} for {key}; update this test"
            );
            let replacement = if shipped.ends_with(":8080") {
                proxy
            } else {
                free_loopback_addr()
            };
            text = text.replace(shipped, &replacement.to_string());
        }

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("writing the test config works");
        TestConfig {
            _dir: dir,
            path,
            proxy,
        }
    }
}

/// A running `hanko-dev up` with its output collected line by line.
struct Up {
    child: Child,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Up {
    fn start(arguments: &[String], config: &Path, data_dir: &Path) -> Up {
        let mut command = Command::new(binary_path("hanko-dev"));
        command
            .args(arguments)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            // The test profile's programs are already built by
            // `cargo build --workspace --bins`.
            .env("HANKO_DEV_NO_BUILD", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting hanko-dev up works");
        let pid = child.id().expect("a running child has a PID");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = vec![
            tokio::spawn(collect_lines(stdout, Arc::clone(&lines))),
            tokio::spawn(collect_lines(stderr, Arc::clone(&lines))),
        ];
        Up {
            child,
            pid,
            lines,
            readers,
        }
    }

    fn output(&self) -> String {
        self.lines
            .lock()
            .expect("no panics while locked")
            .join("\n")
    }

    fn find_line(&self, predicate: impl Fn(&str) -> bool) -> Option<String> {
        self.lines
            .lock()
            .expect("no panics while locked")
            .iter()
            .find(|line| predicate(line))
            .cloned()
    }

    /// Waits until the whole banner is printed and returns its lines.
    async fn wait_for_banner(&mut self) -> Banner {
        let deadline = Instant::now() + BANNER_DEADLINE;
        while self
            .find_line(|line| line.starts_with(BANNER_END))
            .is_none()
        {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                self.drain_output().await;
                panic!(
                    "hanko-dev up exited with {status} before printing its curl lines:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "hanko-dev up printed no curl lines within {BANNER_DEADLINE:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let lines = self.lines.lock().expect("no panics while locked").clone();
        let exports = lines
            .iter()
            .filter(|line| line.starts_with("export TOKEN_"))
            .cloned()
            .collect();
        let curls = lines
            .iter()
            .filter(|line| line.starts_with("curl "))
            .cloned()
            .collect();
        Banner { exports, curls }
    }

    /// Returns the PIDs of the processes `up` reported starting.
    fn started_pids(&self) -> Vec<(String, u32)> {
        let lines = self.lines.lock().expect("no panics while locked");
        lines
            .iter()
            .filter_map(|line| {
                let (_, message) = line.split_once("| started ")?;
                let (name, rest) = message.split_once(" (PID ")?;
                let pid = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), pid))
            })
            .collect()
    }

    /// Sends SIGTERM by PID and waits for `up` to exit.
    async fn stop(&mut self) -> ExitStatus {
        self.stop_with("TERM").await
    }

    /// Sends `signal` by PID and waits for `up` to exit.
    async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        send_signal(self.pid, signal);
        let status = match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(status) => status.expect("waiting for hanko-dev up works"),
            Err(_) => panic!(
                "hanko-dev up did not stop within {STOP_DEADLINE:?} of SIG{signal}:\n{}",
                self.output()
            ),
        };
        self.drain_output().await;
        status
    }

    async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("waiting for hanko-dev up works"),
            Err(_) => panic!(
                "hanko-dev up did not exit within {deadline:?}:\n{}",
                self.output()
            ),
        };
        self.drain_output().await;
        status
    }

    /// Waits until the readers have read everything `up` wrote, because
    /// its exit can be seen before its last lines are read from the pipes.
    async fn drain_output(&mut self) {
        let readers = std::mem::take(&mut self.readers);
        for reader in readers {
            match tokio::time::timeout(DRAIN_DEADLINE, reader).await {
                Ok(joined) => joined.expect("the output reader does not panic"),
                Err(_) => panic!(
                    "stdout or stderr of hanko-dev up is still open {DRAIN_DEADLINE:?} \
                     after it exited, so a process that inherited it still runs:\n{}",
                    self.output()
                ),
            }
        }
    }
}

impl Drop for Up {
    /// Stops `up` the way a user would, so that it stops PostgreSQL too,
    /// when a test fails half way; SIGKILL only as the last resort.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            send_signal(self.pid, "TERM");
            let deadline = Instant::now() + STOP_DEADLINE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.start_kill();
        }
    }
}

/// The paste-ready lines of the banner.
struct Banner {
    exports: Vec<String>,
    curls: Vec<String>,
}

impl Banner {
    fn curl_line(&self, fragment: &str) -> &str {
        self.curls
            .iter()
            .find(|line| line.contains(fragment))
            .unwrap_or_else(|| {
                panic!(
                    "no printed curl line contains {fragment:?}: {:?}",
                    self.curls
                )
            })
    }

    /// Runs the `export` lines and then `curl_line` in bash, as a user
    /// pasting them would, and returns stdout.
    async fn run(&self, curl_line: &str) -> String {
        let script = format!("set -e\n{}\n{curl_line}\n", self.exports.join("\n"));
        let output = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .await
            .expect("running bash works");
        assert!(
            output.status.success(),
            "the printed line failed with {}: {curl_line}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("curl printed UTF-8")
    }

    fn token_a(&self) -> &str {
        let line = self
            .exports
            .iter()
            .find(|line| line.starts_with("export TOKEN_A="))
            .expect("the banner exports TOKEN_A");
        line.trim_start_matches("export TOKEN_A=")
            .trim_matches('\'')
    }
}

async fn collect_lines(reader: impl AsyncRead + Unpin, lines: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(reader).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        lines.lock().expect("no panics while locked").push(line);
    }
}

fn send_signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Returns whether `pid` has exited: no `/proc` entry, or a zombie waiting
/// for a parent that is not ours to reap it.
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which ends with ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn titles(json: &Value) -> Vec<&str> {
    json.as_array()
        .expect("the list is an array")
        .iter()
        .map(|item| item["title"].as_str().expect("items have titles"))
        .collect()
}

/// Creates a data directory that the `postgres` OS user can reach, as a
/// project checkout in a normal home directory is.
fn reachable_data_dir() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    // Under /tmp, not TMPDIR, which may lie in a directory only its owner
    // can enter.
    let parent = tempfile::tempdir_in("/tmp").expect("temp dir");
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod works");
    let data_dir = parent.path().join(".dev");
    (parent, data_dir)
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

#[tokio::test]
async fn readme_command_serves_its_printed_curl_lines() {
    let arguments = readme_up_arguments();
    let config = TestConfig::new();
    let (_parent, data_dir) = reachable_data_dir();

    // First run: a new cluster, demo items, the printed lines work.
    let mut up = Up::start(&arguments, &config.path, &data_dir);
    let banner = up.wait_for_banner().await;
    let list_fragment = format!("{}/api/v1/item/ -H", config.proxy);

    let listed: Value = serde_json::from_str(&banner.run(banner.curl_line(&list_fragment)).await)
        .expect("the list is JSON");
    assert_eq!(titles(&listed), ["Water the plants", "Book train tickets"]);
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .all(|item| item["owner_id"] == USER_A)
    );

    let created: Value = serde_json::from_str(&banner.run(banner.curl_line("-X POST")).await)
        .expect("the item is JSON");
    assert_eq!(created["title"], "Try hanko-edge");
    assert_eq!(created["owner_id"], USER_A);

    let denied = banner.run(banner.curl_line("$TOKEN_B")).await;
    assert!(denied.starts_with("HTTP/1.1 404"), "user B got: {denied}");

    // Stopping by PID stops every process `up` started.
    let started = up.started_pids();
    let names: Vec<&str> = started.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["PostgreSQL", "hanko-dev", "item-api", "edge-proxy"],
        "{}",
        up.output()
    );
    let status = up.stop().await;
    assert!(
        status.success(),
        "hanko-dev up exited with {status}:\n{}",
        up.output()
    );
    for (name, pid) in &started {
        assert!(
            has_exited(*pid),
            "{name} (PID {pid}) still runs after up stopped"
        );
    }
    assert!(
        data_dir.join("postgres/PG_VERSION").is_file(),
        "the cluster stays"
    );
    assert!(
        data_dir.join("hanko/keys/000001/kid").is_file(),
        "the keys stay"
    );
    let first_kid = decode_header(banner.token_a())["kid"].clone();
    drop(up);

    // Second run: the same cluster and keys; demo items are not added twice.
    let mut again = Up::start(&arguments, &config.path, &data_dir);
    let banner = again.wait_for_banner().await;
    let listed: Value = serde_json::from_str(&banner.run(banner.curl_line(&list_fragment)).await)
        .expect("the list is JSON");
    assert_eq!(
        titles(&listed),
        ["Water the plants", "Book train tickets", "Try hanko-edge"]
    );
    assert_eq!(decode_header(banner.token_a())["kid"], first_kid);
    assert!(
        again.output().contains("reusing the PostgreSQL cluster"),
        "{}",
        again.output()
    );
    // Closing the terminal (SIGHUP) stops everything too.
    let started = again.started_pids();
    assert_eq!(started.len(), 4, "{}", again.output());
    assert!(again.stop_with("HUP").await.success(), "{}", again.output());
    for (name, pid) in &started {
        assert!(
            has_exited(*pid),
            "{name} (PID {pid}) still runs after SIGHUP to up"
        );
    }
    drop(again);

    // --reset starts afresh.
    let mut with_reset = arguments.clone();
    with_reset.push("--reset".to_owned());
    let mut fresh = Up::start(&with_reset, &config.path, &data_dir);
    let banner = fresh.wait_for_banner().await;
    let listed: Value = serde_json::from_str(&banner.run(banner.curl_line(&list_fragment)).await)
        .expect("the list is JSON");
    assert_eq!(titles(&listed), ["Water the plants", "Book train tickets"]);
    assert_ne!(decode_header(banner.token_a())["kid"], first_kid);
    assert!(fresh.stop().await.success(), "{}", fresh.output());
}

#[tokio::test]
async fn taken_port_is_named_before_anything_starts() {
    let config = TestConfig::new();
    let (_parent, data_dir) = reachable_data_dir();
    let _taken = TcpListener::bind(config.proxy).expect("the proxy port is free to take");

    let mut up = Up::start(&readme_up_arguments(), &config.path, &data_dir);
    let status = up.wait_exit(Duration::from_secs(60)).await;
    let output = up.output();

    assert!(!status.success(), "{output}");
    assert!(
        output.contains(&format!("{} ([proxy] listen)", config.proxy)),
        "{output}"
    );
    assert!(output.contains("--config"), "{output}");
    assert!(up.started_pids().is_empty(), "{output}");
    assert!(!data_dir.join("postgres/PG_VERSION").exists(), "{output}");
}

#[tokio::test]
async fn unreachable_data_dir_moves_the_cluster() {
    if !running_as_root() {
        eprintln!("skipped: only root runs PostgreSQL as another OS user");
        return;
    }
    let config = TestConfig::new();
    // A 0700 parent keeps the postgres user out, like a checkout under /root.
    let parent = tempfile::tempdir().expect("temp dir");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod works");
    }
    let data_dir = parent.path().join(".dev");

    // Declared before `up`, so it runs after `up` has stopped PostgreSQL.
    let _cleanup = MovedClusterCleanup(data_dir.clone());

    let mut up = Up::start(&readme_up_arguments(), &config.path, &data_dir);
    let banner = up.wait_for_banner().await;
    let listed: Value = serde_json::from_str(
        &banner
            .run(banner.curl_line(&format!("{}/api/v1/item/ -H", config.proxy)))
            .await,
    )
    .expect("the list is JSON");
    let status = up.stop().await;
    let location = std::fs::read_to_string(data_dir.join("postgres-location"))
        .expect("the moved cluster's location is recorded");
    let cluster = PathBuf::from(location.trim());

    assert_eq!(titles(&listed), ["Water the plants", "Book train tickets"]);
    assert!(status.success(), "{}", up.output());
    assert!(cluster.starts_with("/var/tmp/"), "{}", cluster.display());
    assert!(
        up.output()
            .contains(&format!("the cluster lives in {}", cluster.display())),
        "{}",
        up.output()
    );
}

/// Removes the `/var/tmp/hanko-edge-*` directory that `up` recorded for a
/// data directory, whether the test passed or not.
struct MovedClusterCleanup(PathBuf);

impl Drop for MovedClusterCleanup {
    fn drop(&mut self) {
        let Ok(location) = std::fs::read_to_string(self.0.join("postgres-location")) else {
            return;
        };
        let cluster = PathBuf::from(location.trim());
        if let Some(parent) = cluster.parent()
            && parent.starts_with("/var/tmp/")
            && parent
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("hanko-edge-"))
        {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}
