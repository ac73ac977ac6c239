//! Child processes of `hanko-dev up`: started in their own process group,
//! their output printed line by line behind their name, polled until
//! healthy, and stopped by PID.
//!
//! Each child gets its own process group so that a Ctrl-C at the terminal,
//! or the SIGHUP of closing it, reaches only `up`, which then stops the
//! children in order. Nothing here restarts a child that dies.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a child may take before its health endpoint returns 200.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(60);

/// How long a child may take to exit after its stop signal before it gets
/// SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long the forwarders may take to print a child's last lines once it
/// has exited. A pipe handed on to a process that still runs stays open.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Width of the name column in front of each child's log line.
const NAME_WIDTH: usize = 10;

/// A signal name once SIGINT, SIGTERM or SIGHUP has arrived, `None` before.
pub type StopRequest = watch::Receiver<Option<&'static str>>;

/// A running child whose output is forwarded with a name prefix.
pub struct Supervised {
    name: &'static str,
    pid: u32,
    stop_signal: &'static str,
    child: Child,
    forwarders: Vec<JoinHandle<()>>,
}

impl Supervised {
    /// Starts `command` as `name`, in a new process group, with stdin
    /// closed and stdout and stderr forwarded line by line. `stop_signal`
    /// (such as `TERM`) is what [`Supervised::stop`] sends.
    ///
    /// # Errors
    ///
    /// Fails when the program cannot be started.
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        stop_signal: &'static str,
    ) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // Last resort if `up` itself unwinds without stopping it.
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({command:?}) failed"))?;
        let pid = child
            .id()
            .context("a child that was just spawned has a PID")?;
        let forwarders = forward_output(name, &mut child);
        say(&format!("started {name} (PID {pid})"));

        Ok(Self {
            name,
            pid,
            stop_signal,
            child,
            forwarders,
        })
    }

    /// Returns the child's name as shown in front of its log lines.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Waits for the child to exit.
    ///
    /// # Errors
    ///
    /// Fails when waiting on the process fails.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        let status = self
            .child
            .wait()
            .await
            .with_context(|| format!("waiting for {} failed", self.name))?;
        self.print_last_lines().await;
        Ok(status)
    }

    /// Lets the forwarders finish, so that a message about the child's log
    /// follows its last lines. A wait cut short by `select!` resumes here.
    async fn print_last_lines(&mut self) {
        drain_output(&mut self.forwarders).await;
    }

    /// Polls `url` until it returns 200, the child exits, a stop is
    /// requested, or [`HEALTH_DEADLINE`] passes.
    ///
    /// # Errors
    ///
    /// Fails in every case but a 200, naming the child and the URL.
    pub async fn wait_healthy(&mut self, url: &str, stop: &StopRequest) -> Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building the HTTP client for health checks failed")?;
        let deadline = Instant::now() + HEALTH_DEADLINE;

        loop {
            if let Some(signal) = *stop.borrow() {
                bail!("{signal} received while waiting for {}", self.name);
            }
            if let Some(status) = self.child.try_wait().context("checking a child failed")? {
                self.print_last_lines().await;
                bail!(
                    "{} exited with {status} before {url} returned 200; its log is above",
                    self.name
                );
            }
            if let Ok(response) = client.get(url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                say(&format!("{} is healthy ({url})", self.name));
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} timed out: {url} did not return 200 within {} s; its log is above",
                    self.name,
                    HEALTH_DEADLINE.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the child: its stop signal by PID, then SIGKILL after
    /// [`STOP_GRACE`].
    pub async fn stop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.print_last_lines().await;
            say(&format!("{} had already exited ({status})", self.name));
            return;
        }

        send_signal(self.pid, self.stop_signal);
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.print_last_lines().await;
                say(&format!(
                    "stopped {} (PID {}, {status})",
                    self.name, self.pid
                ));
            }
            Ok(Err(error)) => say(&format!("waiting for {} failed: {error}", self.name)),
            Err(_) => {
                say(&format!(
                    "{} (PID {}) still running {} s after SIG{}; sending SIGKILL",
                    self.name,
                    self.pid,
                    STOP_GRACE.as_secs(),
                    self.stop_signal
                ));
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
            }
        }
    }
}

/// Prints one of `up`'s own messages, prefixed like the children's lines.
pub fn say(message: &str) {
    print_line("up", message);
}

/// Copies a finished command's output into the prefixed log, for commands
/// run to completion rather than supervised.
pub fn print_output(name: &str, output: &[u8]) {
    for line in String::from_utf8_lossy(output).lines() {
        print_line(name, line);
    }
}

fn print_line(name: &str, line: &str) {
    use std::io::Write as _;
    // A closed stdout (say, piped into `head`) must not stop the stack.
    let _ = writeln!(std::io::stdout().lock(), "{name:<NAME_WIDTH$} | {line}");
}

/// Starts forwarding `child`'s stdout and stderr behind `name` and returns
/// the forwarding tasks.
pub fn forward_output(name: &'static str, child: &mut Child) -> Vec<JoinHandle<()>> {
    let mut forwarders = Vec::with_capacity(2);
    if let Some(stdout) = child.stdout.take() {
        forwarders.push(tokio::spawn(forward_lines(name, stdout)));
    }
    if let Some(stderr) = child.stderr.take() {
        forwarders.push(tokio::spawn(forward_lines(name, stderr)));
    }
    forwarders
}

/// Waits up to [`OUTPUT_DRAIN`] in all for `forwarders` to reach the end of
/// their pipes, because an exit can be seen before the last lines are read.
pub async fn drain_output(forwarders: &mut Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + OUTPUT_DRAIN;
    // A forwarder leaves the list only once it has finished, so a drain
    // that is dropped part way can be resumed.
    while let Some(forwarder) = forwarders.last_mut() {
        if tokio::time::timeout_at(deadline, forwarder).await.is_err() {
            return;
        }
        forwarders.pop();
    }
}

/// Forwards lines from `reader` until it closes; a pipe may outlive the
/// direct child when it hands the pipe on (pg_ctl to postgres does).
async fn forward_lines(name: &'static str, reader: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(reader).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => print_line(name, &line),
            Ok(None) => break,
            // Invalid UTF-8 ends `lines`; note it rather than looping.
            Err(error) => {
                print_line(name, &format!("[output unreadable: {error}]"));
                break;
            }
        }
    }
}

/// Sends `signal` (such as `TERM`) to `pid` with the `kill` program.
pub fn send_signal(pid: u32, signal: &str) {
    let result = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(error) = result {
        say(&format!("running `kill -{signal} {pid}` failed: {error}"));
    }
}
