//! Log output: `tracing` with an `EnvFilter` from `RUST_LOG` (default
//! `info`), as text or JSON lines on stderr. Pingora's `log` records are
//! bridged into the same subscriber.
//!
//! Lines are formatted on the thread that logs, then handed to one writer
//! thread that writes them to stderr in batches, so a worker thread never
//! waits on a `write` per access event. [`flush`] must run before the
//! process exits, because lines still queued are lost otherwise. This
//! module does not rotate or open log files: stderr goes where the
//! service manager sends it.

use std::io::{BufWriter, IsTerminal as _};
use std::sync::Mutex;

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Capacity of the writer thread's stderr buffer, in bytes. The writer
/// thread flushes it whenever its queue runs empty, so under load one
/// `write` carries many lines and at low load each line still appears at
/// once.
const STDERR_BUFFER_BYTES: usize = 64 * 1024;

/// The guard of the writer thread, kept for the life of the process and
/// dropped by [`flush`]. Dropping it writes out every queued line.
static WRITER_GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr through the writer
/// thread. ANSI colours are used only when stderr is a terminal.
///
/// # Panics
///
/// Panics when the writer thread cannot be started or a global subscriber
/// is already installed, both of which only happen at a broken start-up.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    // Not lossy: when the queue is full the logging thread waits instead of
    // dropping lines, so every request keeps its access event.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("edge-proxy-log")
        .finish(BufWriter::with_capacity(
            STDERR_BUFFER_BYTES,
            std::io::stderr(),
        ));
    *WRITER_GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(guard);

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Writes out every queued log line and stops the writer thread, waiting up
/// to about one second. Call it right before the process exits; lines
/// logged afterwards are dropped.
pub fn flush() {
    let guard = WRITER_GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    drop(guard);
}
