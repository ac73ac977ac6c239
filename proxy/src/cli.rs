//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// Pingora reverse proxy that lets requests through only with a valid Hanko
/// session token and passes the verified user id to the upstream.
#[derive(Debug, Parser)]
#[command(name = "edge-proxy", version)]
pub struct Cli {
    /// Config file with the [proxy] table.
    #[arg(long, short, global = true, default_value = "config.toml")]
    pub config: PathBuf,

    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Take over the listening sockets of a running edge-proxy through the
    /// configured upgrade socket (send the old process SIGQUIT).
    #[arg(long)]
    pub upgrade: bool,

    /// The subcommand; without one the proxy serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config file and exit: 0 when valid, 1 with every problem
    /// named by key and value otherwise.
    Check,
}
