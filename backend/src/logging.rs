//! Log setup: `tracing` events filtered by `RUST_LOG` (default `info`),
//! written to stderr as text or as JSON lines.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Output format of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the fields of the enclosing spans.
    Json,
}

/// Installs the global `tracing` subscriber.
///
/// An invalid `RUST_LOG` falls back to `info` with a warning, so a typo in
/// the filter never hides startup errors.
pub fn init(format: LogFormat) {
    let (filter, filter_error) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(error) => {
            let unset = std::env::var_os(EnvFilter::DEFAULT_ENV).is_none();
            let error = (!unset).then(|| error.to_string());
            (EnvFilter::new("info"), error)
        }
    };

    // Colour codes only when a person watches the terminal, never in files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }

    if let Some(error) = filter_error {
        tracing::warn!(%error, "RUST_LOG is invalid; logging at info");
    }
}
