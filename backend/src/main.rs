//! item-api command line: parse arguments, set up logging, then migrate the
//! database or serve the API. The work itself lives in the library so tests
//! can drive it without this binary.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    // 1. Arguments.
    let cli = Cli::parse();

    // 2. Logging, before anything can fail, so startup errors are logged.
    item_api::logging::init(cli.log_format);

    // 3. The chosen command.
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "item-api failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate {
            config,
            database_url,
        } => {
            if let Some(path) = config {
                // The file is checked for syntax and unknown keys only: the
                // admin URL comes from the command line, not from [backend].
                item_api::config::FileConfig::load(&path)?;
            }
            let url = item_api::config::DatabaseUrl::new(database_url);
            item_api::migrate::run(&url).await
        }
        Command::Serve { config } => {
            let environment_url = std::env::var("DATABASE_URL").ok();
            let config = item_api::config::Config::load(&config, environment_url)
                .with_context(|| format!("loading configuration {}", config.display()))?;
            item_api::server::serve(config).await
        }
    }
}
