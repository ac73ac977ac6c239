//! `hanko-dev`: the Hanko stand-in's command line. It serves a key set and
//! session validation, mints tokens, rotates and revokes, and runs the
//! whole local stack with `up`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hanko_dev::claims::TokenRequest;
use hanko_dev::keys::DEFAULT_KEY_BITS;
use hanko_dev::server::{DEFAULT_COOKIE_NAME, ServerState};
use hanko_dev::store::DataDir;
use hanko_dev::up::{BuildPolicy, UpOptions};
use uuid::Uuid;

/// The key directory `serve`, `token`, `rotate` and `revoke` use by
/// default: the one `hanko-dev up` creates with its default data directory.
const DEFAULT_KEY_DIR: &str = ".dev/hanko";

#[derive(Parser)]
#[command(version, about = "Hanko stand-in for development and tests")]
struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: CommandLine,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum CommandLine {
    /// Serve the JWKS, /sessions/validate and /logout on a loopback address.
    Serve {
        /// Loopback address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Directory with the signing keys; created with a first key when
        /// missing.
        #[arg(long, default_value = DEFAULT_KEY_DIR)]
        data_dir: PathBuf,
        /// Cookie that GET /sessions/validate and /logout read the token from.
        #[arg(long, default_value = DEFAULT_COOKIE_NAME)]
        cookie_name: String,
    },
    /// Print a session token signed by the current key.
    Token {
        /// Directory with the signing keys.
        #[arg(long, default_value = DEFAULT_KEY_DIR)]
        data_dir: PathBuf,
        /// User id (the `sub` claim), a UUID.
        #[arg(long)]
        sub: Uuid,
        /// Primary email address (the `email` claim); omitted when not given.
        #[arg(long)]
        email: Option<String>,
        /// Lifespan in seconds: `exp = iat + ttl`.
        #[arg(long, default_value_t = 12 * 60 * 60)]
        ttl: u64,
        /// Audience; repeat for several. Default: localhost.
        #[arg(long = "aud")]
        audience: Vec<String>,
        /// Username claim.
        #[arg(long)]
        username: Option<String>,
        /// Issuer claim; Hanko sets one only when configured.
        #[arg(long = "iss")]
        issuer: Option<String>,
        /// Session id; default: a new random one.
        #[arg(long)]
        session_id: Option<Uuid>,
    },
    /// Add a new signing key in front; older keys stay in the JWKS.
    Rotate {
        /// Directory with the signing keys.
        #[arg(long, default_value = DEFAULT_KEY_DIR)]
        data_dir: PathBuf,
        /// RSA key size in bits: 2048, 3072 or 4096.
        #[arg(long, default_value_t = DEFAULT_KEY_BITS)]
        bits: usize,
    },
    /// Revoke a session, so /sessions/validate returns is_valid false for it.
    Revoke {
        /// Directory with the signing keys and revocations.
        #[arg(long, default_value = DEFAULT_KEY_DIR)]
        data_dir: PathBuf,
        /// The session id (the token's `session_id` claim).
        #[arg(long)]
        session_id: Uuid,
    },
    /// Run PostgreSQL, hanko-dev, item-api and edge-proxy until Ctrl-C.
    Up {
        /// The shared config file.
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Directory for the cluster, keys and passwords, kept between runs.
        #[arg(long, default_value = ".dev")]
        data_dir: PathBuf,
        /// Delete the data of earlier runs first.
        #[arg(long)]
        reset: bool,
        /// Use item-api and edge-proxy next to this program as they are,
        /// never running `cargo build`.
        #[arg(long, env = "HANKO_DEV_NO_BUILD", value_parser = clap::builder::FalseyValueParser::new())]
        no_build: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);

    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime works");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: CommandLine) -> Result<()> {
    match command {
        CommandLine::Serve {
            listen,
            data_dir,
            cookie_name,
        } => {
            let store = DataDir::open(&data_dir)?;
            store.signing_key(DEFAULT_KEY_BITS)?;
            let state = Arc::new(ServerState::new(store, cookie_name));
            hanko_dev::server::serve(listen, state).await
        }
        CommandLine::Token {
            data_dir,
            sub,
            email,
            ttl,
            audience,
            username,
            issuer,
            session_id,
        } => {
            let key = DataDir::open(&data_dir)?.signing_key(DEFAULT_KEY_BITS)?;
            let mut request = TokenRequest::new(sub);
            request.email = email;
            request.ttl = Duration::from_secs(ttl);
            request.audience = audience;
            request.username = username;
            request.issuer = issuer;
            request.session_id = session_id;
            println!("{}", key.sign(&request.claims())?);
            Ok(())
        }
        CommandLine::Rotate { data_dir, bits } => {
            let key = DataDir::open(&data_dir)?.rotate(bits)?;
            println!("{}", key.kid());
            Ok(())
        }
        CommandLine::Revoke {
            data_dir,
            session_id,
        } => {
            DataDir::open(&data_dir)?.revoke(session_id)?;
            tracing::info!(%session_id, "session revoked");
            Ok(())
        }
        CommandLine::Up {
            config,
            data_dir,
            reset,
            no_build,
        } => {
            let build = if no_build {
                BuildPolicy::Never
            } else {
                BuildPolicy::Auto
            };
            hanko_dev::up::run(UpOptions {
                config,
                data_dir,
                reset,
                build,
            })
            .await
            .context("hanko-dev up failed")
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
