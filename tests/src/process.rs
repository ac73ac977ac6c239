//! Child processes for the real binaries: locating them, starting them with
//! their output captured to files, waiting until they are healthy, and
//! stopping them by PID.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a binary may take to become healthy before the test fails.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// How many bytes of a child's log a failure message shows.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// Returns a loopback address with a port that was free a moment ago and
/// that this test process has not handed out before.
///
/// The port is released before returning, so another process could take it
/// in between; tests accept that small race because Pingora offers no way to
/// read back a port chosen by the kernel. Within one test binary, though,
/// tests run in parallel, and the kernel may pick a port just released by
/// another test that has not started its server yet. Two proxies would then
/// be given one port. The second cannot listen, so its test would talk to
/// the first one's proxy, which has other keys and routes.
pub fn free_loopback_addr() -> SocketAddr {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 must work");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        if claim_port(addr.port()) {
            return addr;
        }
    }
}

/// Records `port` as used by this test process. Returns false when it was
/// already handed out or bound, here or by an in-process stand-in.
fn claim_port(port: u16) -> bool {
    static CLAIMED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    CLAIMED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(port)
}

/// Binds a listener for an in-process stand-in to a free loopback port and
/// returns it with its address.
///
/// # Panics
///
/// Panics when no loopback port can be bound.
pub async fn bind_loopback() -> (tokio::net::TcpListener, SocketAddr) {
    // A port handed to a child process may be free again until the child
    // binds it, and a stand-in that took it would respond in its place.
    loop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0 must work");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        if claim_port(addr.port()) {
            return (listener, addr);
        }
    }
}

/// Returns the path of a workspace binary built in the same profile as the
/// running test, such as `target/debug/item-api`.
///
/// # Panics
///
/// Panics with the build command to run when the binary does not exist.
pub fn binary_path(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test-binary>: the workspace binaries sit in
    // target/<profile>.
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found; build it first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// A running child process whose stdout and stderr go to a log file.
///
/// Dropping it kills the process by PID and waits for it.
pub struct ChildProcess {
    name: String,
    command_line: String,
    child: Child,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl ChildProcess {
    /// Starts `command` with its output captured; `name` labels failures.
    ///
    /// # Panics
    ///
    /// Panics when the process cannot be started.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        let log_dir = tempfile::Builder::new()
            .prefix(&format!("hanko-edge-{name}-log-"))
            .tempdir()
            .expect("creating a temp dir for the child's log must work");
        let log_path = log_dir.path().join("output.log");
        let log = File::create(&log_path).expect("creating the child's log file must work");
        let log_for_stderr = log.try_clone().expect("cloning a file handle must work");
        let command_line = format!("{command:?}");

        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr));
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name} ({command_line}) failed: {error}"));

        Self {
            name: name.to_owned(),
            command_line,
            child,
            log_path,
            _log_dir: log_dir,
        }
    }

    /// Returns the operating-system process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the whole log captured so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Returns the last few kilobytes of the log.
    pub fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.log_path) else {
            return String::new();
        };
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = length.saturating_sub(LOG_TAIL_BYTES);
        let _ = file.seek(SeekFrom::Start(start));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Returns the exit status if the process has already ended.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `url` answers `200 OK`, polling until [`STARTUP_DEADLINE`].
    ///
    /// # Panics
    ///
    /// Panics with the command, exit status and log tail when the process
    /// exits or the deadline passes first.
    pub async fn wait_healthy(&mut self, url: &str) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("building an HTTP client must work");
        let deadline = Instant::now() + STARTUP_DEADLINE;

        loop {
            if let Some(status) = self.try_status() {
                self.fail(&format!("exited with {status} before {url} answered 200"));
            }
            if let Ok(response) = client.get(url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{url} did not answer 200 within {STARTUP_DEADLINE:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (for example `"HUP"` or `"TERM"`) to the process by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill must work");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Kills the process and waits for it to end.
    pub fn stop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Panics with everything needed to understand a failed start.
    pub fn fail(&mut self, why: &str) -> ! {
        let status = self.try_status();
        panic!(
            "{name} {why}\ncommand: {command}\nstatus: {status:?}\n--- {name} log tail ---\n{log}",
            name = self.name,
            command = self.command_line,
            log = self.log_tail(),
        );
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
