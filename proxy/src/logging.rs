//! Log output: `tracing` with an `EnvFilter` from `RUST_LOG` (default
//! `info`), as text or JSON lines on stderr. Pingora's `log` records are
//! bridged into the same subscriber, except its debug and trace records,
//! which are dropped at any `RUST_LOG` setting. Pingora 0.9.1 logs whole
//! request and response heads at those levels, with their `Authorization`
//! and `Cookie` values (at debug, the request it sends upstream).
//!
//! Access events, one per request, are batched. Each is formatted on the
//! thread that logs it, by [`AccessFormat`] in the same format as every
//! other line, and appended to a shared buffer. The buffer goes to
//! stderr in one `write` once it contains [`BATCH_BYTES`], and otherwise a
//! thread that wakes up every [`FLUSH_INTERVAL`] writes it out. Every
//! other event is written at once, after the access lines buffered before
//! it, so the order of lines is kept.
//!
//! A writer takes the buffered lines out under the buffer's lock and
//! writes them after releasing it, so a slow stderr (a full pipe) holds up
//! only threads that must write themselves. Writers queue on a second
//! lock, which keeps the lines in order.
//!
//! NOTE: while stderr stays blocked, the buffer soon holds a batch again,
//! and then every thread that logs queues behind the blocked writer, so a
//! log reader that stops reading stops the proxy workers too (the admin
//! listener keeps responding). Lines are never dropped for back-pressure.
//!
//! The batching exists because a `write` per request, or a hand-over to a
//! writer thread per request, cost more CPU than the rest of the access
//! event. [`flush`] must run before the process exits, and a panic flushes
//! too. This module does not rotate or open log files: stderr goes where
//! the service manager sends it.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use clap::ValueEnum;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::access_format::AccessFormat;

/// Target of the access event, the only event that is batched.
pub const ACCESS_TARGET: &str = "edge_proxy::access";

/// Buffered access lines are written out once they reach this many bytes:
/// about a hundred lines per `write`.
pub const BATCH_BYTES: usize = 32 * 1024;

/// Maximum time an access line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How long a panic waits for another thread's write before printing its
/// message without the buffered lines.
const PANIC_WAIT: Duration = Duration::from_secs(1);

/// Lines formatted but not yet written to stderr.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Held while lines are written: the buffer taken from [`PENDING`], whose
/// allocation goes back to it at the next write.
static WRITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr, starts the thread
/// that writes out buffered access lines, and makes a panic write them out
/// before its message. ANSI colours are used only when stderr is a
/// terminal.
///
/// # Panics
///
/// Panics when the flush thread cannot be started or a global subscriber
/// is already installed, both of which only happen at a broken start-up.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();

    pending().reserve(BATCH_BYTES);
    lock(&WRITING).reserve(BATCH_BYTES);
    std::thread::Builder::new()
        .name("edge-proxy-log".to_owned())
        .spawn(|| {
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flush();
            }
        })
        .expect("the log flush thread starts");
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_on_panic();
        previous_hook(info);
    }));

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr);
    let without_header_dumps = filter_fn(|metadata| !is_pingora_debug(metadata));
    match format {
        LogFormat::Text => builder
            .with_ansi(ansi)
            .event_format(AccessFormat::text(SystemTime))
            .finish()
            .with(without_header_dumps)
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(AccessFormat::flat_json(SystemTime))
            .finish()
            .with(without_header_dumps)
            .init(),
    }
}

/// Reports whether `metadata` is a debug or trace record of one of
/// Pingora's crates, which may contain request headers.
fn is_pingora_debug(metadata: &Metadata<'_>) -> bool {
    *metadata.level() > Level::INFO && metadata.target().starts_with("pingora")
}

/// Writes out every buffered log line. Call it right before the process
/// exits.
pub fn flush() {
    write_out(false);
}

/// Takes the buffered lines and writes them, or with `only_if_full` does
/// nothing unless they still fill a batch: threads that found the batch
/// full while another was writing it need not each write a few lines.
fn write_out(only_if_full: bool) {
    // Waiting for the writer before taking the lines keeps them after
    // the ones it is writing.
    let mut writing = lock(&WRITING);
    {
        let mut pending = pending();
        if only_if_full && pending.len() < BATCH_BYTES {
            return;
        }
        std::mem::swap(&mut *writing, &mut *pending);
    }
    write_all(&mut writing);
}

/// Writes out the buffered lines before a panic message. No code that
/// holds either lock can panic, so a taken lock belongs to another thread
/// and is waited for, at most about a second in case its write never
/// ends.
fn flush_on_panic() {
    let Some(mut writing) = try_lock_for(&WRITING, PANIC_WAIT) else {
        return;
    };
    let Some(mut pending) = try_lock_for(&PENDING, PANIC_WAIT) else {
        return;
    };
    std::mem::swap(&mut *writing, &mut *pending);
    drop(pending);
    write_all(&mut writing);
}

/// Tries to lock `buffer` until `wait` has passed.
fn try_lock_for(
    buffer: &'static Mutex<Vec<u8>>,
    wait: Duration,
) -> Option<MutexGuard<'static, Vec<u8>>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match buffer.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

fn pending() -> MutexGuard<'static, Vec<u8>> {
    lock(&PENDING)
}

fn lock(buffer: &'static Mutex<Vec<u8>>) -> MutexGuard<'static, Vec<u8>> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `lines` to stderr with `write_all` and empties them.
fn write_all(lines: &mut Vec<u8>) {
    if lines.is_empty() {
        return;
    }
    // A failed write to stderr cannot be reported anywhere; the lines are
    // dropped rather than kept to grow the buffer without bound.
    let _ = std::io::stderr().lock().write_all(lines);
    lines.clear();
}

/// The subscriber's writer: hands out an [`EventWriter`] per event.
#[derive(Debug, Clone, Copy)]
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { batched: false }
    }

    fn make_writer_for(&'a self, metadata: &Metadata<'_>) -> Self::Writer {
        EventWriter {
            batched: metadata.target() == ACCESS_TARGET,
        }
    }
}

/// Receives one formatted event, which the subscriber writes in one call.
struct EventWriter {
    batched: bool,
}

impl std::io::Write for EventWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = pending();
            pending.extend_from_slice(line);
            pending.len() >= BATCH_BYTES
        };
        if !self.batched {
            write_out(false);
        } else if full {
            write_out(true);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
