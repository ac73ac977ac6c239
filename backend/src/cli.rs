//! Command-line arguments. Values are only parsed here; the configuration
//! file is validated by `item_api::config`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use item_api::logging::LogFormat;

/// JSON API for items, guarded by PostgreSQL row-level security.
#[derive(Debug, Parser)]
#[command(name = "item-api", version)]
pub struct Cli {
    /// Log output format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommand: the work item-api does in this run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the SQL migrations embedded in this binary (safe to repeat).
    Migrate {
        /// Configuration file, checked for syntax and unknown keys.
        #[arg(long)]
        config: Option<PathBuf>,

        /// PostgreSQL URL of a role allowed to create roles, schemas and
        /// tables (not the `authenticator` URL the server uses). The
        /// environment variable keeps its password out of the process list.
        #[arg(long, env = "ITEM_API_MIGRATE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Serve the HTTP API configured in the `[backend]` table.
    Serve {
        /// Configuration file with a `[backend]` table.
        #[arg(long)]
        config: PathBuf,
    },
}
