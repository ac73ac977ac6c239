//! The `[backend]` table of the shared configuration file, and its
//! validation into a typed [`Config`].
//!
//! The file struct mirrors the TOML, and [`Config`] contains checked, typed values.
//! Validation names the key and the value it rejects and never panics. The
//! database URL is kept in [`DatabaseUrl`], whose `Debug` hides it.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::HeaderName;
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

/// Default listen address: loopback only, because item-api trusts the
/// user-id header and must be reachable through edge-proxy alone.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// Default header carrying the caller's user id.
pub const DEFAULT_USER_ID_HEADER: &str = "X-User-Id";
/// Default header carrying the caller's email address.
pub const DEFAULT_EMAIL_HEADER: &str = "X-User-Email";
/// Default maximum number of pooled database connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default time a request waits for a pooled connection, in milliseconds.
pub const DEFAULT_ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// Default time one SQL statement may run, lock waits included, in
/// milliseconds. The list statement runs in under a millisecond on
/// 1,000,000 rows (docs/benchmarks.md), so only a stuck statement gets here.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// Default maximum request body size, in bytes. A maximal item (255 + 10,000
/// characters) fits even with every character written as a JSON escape.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000;
const ACQUIRE_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=600_000;
const STATEMENT_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=600_000;
const MAX_BODY_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1_024..=16 * 1024 * 1024;

/// The whole configuration file as item-api reads it: its own `[backend]`
/// table, and the proxy's `[proxy]` table kept opaque so that any other
/// top-level key is still rejected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The `[backend]` table.
    #[serde(default)]
    pub backend: BackendFile,
    /// The `[proxy]` table, read by edge-proxy and ignored here.
    pub proxy: Option<toml::Value>,
}

/// The `[backend]` table as written in the file; see `config.toml` for
/// each key's meaning, unit and default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// Socket address to listen on.
    pub listen: Option<String>,
    /// PostgreSQL URL of the `authenticator` role.
    pub database_url: Option<String>,
    /// Header with the caller's user id.
    pub user_id_header: Option<String>,
    /// Header with the caller's email address.
    pub email_header: Option<String>,
    /// Maximum number of pooled database connections.
    pub max_connections: Option<u32>,
    /// Time a request waits for a pooled connection, in milliseconds.
    pub acquire_timeout_ms: Option<u64>,
    /// Time one SQL statement may run, in milliseconds.
    pub statement_timeout_ms: Option<u64>,
    /// Maximum request body size, in bytes.
    pub max_body_bytes: Option<usize>,
}

/// The validated `[backend]` configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// PostgreSQL URL of the `authenticator` role.
    pub database_url: DatabaseUrl,
    /// Header with the caller's user id.
    pub user_id_header: HeaderName,
    /// Header with the caller's email address.
    pub email_header: HeaderName,
    /// Maximum number of pooled database connections.
    pub max_connections: u32,
    /// Time a request waits for a pooled connection.
    pub acquire_timeout: Duration,
    /// Time one SQL statement may run, in milliseconds.
    pub statement_timeout_ms: u64,
    /// Maximum request body size, in bytes.
    pub max_body_bytes: usize,
}

/// A PostgreSQL URL, which may contain a password: `Debug` and `Display`
/// print `[redacted]`.
#[derive(Clone)]
pub struct DatabaseUrl(String);

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown keys or wrong types. The
    /// message gives line and column but not the line, which may hold the
    /// database password.
    #[error("invalid TOML: {0}")]
    Parse(String),
    /// A key has a value outside its allowed range or format.
    #[error("{key} = {value} is invalid: {reason}")]
    Invalid {
        /// Dotted key, such as `backend.listen`.
        key: &'static str,
        /// The rejected value, or `[redacted]` for secrets.
        value: String,
        /// Explanation of the problem and of the allowed values.
        reason: String,
    },
    /// A required key is absent.
    #[error("{key} is missing: {hint}")]
    Missing {
        /// Dotted key, such as `backend.database_url`.
        key: &'static str,
        /// Places the value can come from.
        hint: &'static str,
    },
}

impl ConfigError {
    /// Describes a TOML error in `text` by line, column and message.
    fn parse(error: &toml::de::Error, text: &str) -> Self {
        let message = error.message().trim_end();
        let Some(span) = error.span() else {
            return Self::Parse(message.to_owned());
        };
        let before = text.get(..span.start).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        Self::Parse(format!("line {line}, column {column}: {message}"))
    }
}

impl FileConfig {
    /// Reads and parses `path` without validating the values.
    ///
    /// # Errors
    ///
    /// Returns an error naming the file when it cannot be read or parsed.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        let file: Self = toml::from_str(&text)
            .map_err(|error| ConfigError::parse(&error, &text))
            .with_context(|| format!("parsing configuration file {}", path.display()))?;
        Ok(file)
    }
}

impl Config {
    /// Reads `path` and validates its `[backend]` table. A non-empty
    /// `environment_url` (the `DATABASE_URL` variable) replaces
    /// `backend.database_url`.
    ///
    /// # Errors
    ///
    /// Returns an error naming the file, key and value that is wrong.
    pub fn load(path: &Path, environment_url: Option<String>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        let config = Self::from_toml(&text, environment_url)?;
        Ok(config)
    }

    /// Parses and validates a configuration file's text.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError`] naming the first key that is wrong.
    pub fn from_toml(text: &str, environment_url: Option<String>) -> Result<Self, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|error| ConfigError::parse(&error, text))?;
        Self::validate(file.backend, environment_url)
    }

    /// Validates the `[backend]` table into a typed configuration.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError`] naming the first key that is wrong.
    pub fn validate(
        backend: BackendFile,
        environment_url: Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen_text = backend.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = SocketAddr::from_str(listen_text).map_err(|_| ConfigError::Invalid {
            key: "backend.listen",
            value: format!("{listen_text:?}"),
            reason: "expected an IP address and port such as \"127.0.0.1:8081\"".into(),
        })?;

        let database_url = environment_url
            .filter(|url| !url.is_empty())
            .or(backend.database_url)
            .ok_or(ConfigError::Missing {
                key: "backend.database_url",
                hint: "set it in [backend] or in the DATABASE_URL environment variable",
            })?;
        let database_url = DatabaseUrl::parse(database_url)?;

        let user_id_header = parse_header_name(
            "backend.user_id_header",
            backend.user_id_header.as_deref(),
            DEFAULT_USER_ID_HEADER,
        )?;
        let email_header = parse_header_name(
            "backend.email_header",
            backend.email_header.as_deref(),
            DEFAULT_EMAIL_HEADER,
        )?;
        if user_id_header == email_header {
            return Err(ConfigError::Invalid {
                key: "backend.email_header",
                value: format!("{:?}", email_header.as_str()),
                reason: "must differ from backend.user_id_header".into(),
            });
        }

        let max_connections = check_range(
            "backend.max_connections",
            backend.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            MAX_CONNECTIONS_RANGE,
        )?;
        let acquire_timeout_ms = check_range(
            "backend.acquire_timeout_ms",
            backend
                .acquire_timeout_ms
                .unwrap_or(DEFAULT_ACQUIRE_TIMEOUT_MS),
            ACQUIRE_TIMEOUT_MS_RANGE,
        )?;
        let statement_timeout_ms = check_range(
            "backend.statement_timeout_ms",
            backend
                .statement_timeout_ms
                .unwrap_or(DEFAULT_STATEMENT_TIMEOUT_MS),
            STATEMENT_TIMEOUT_MS_RANGE,
        )?;
        let max_body_bytes = check_range(
            "backend.max_body_bytes",
            backend.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            MAX_BODY_BYTES_RANGE,
        )?;

        Ok(Self {
            listen,
            database_url,
            user_id_header,
            email_header,
            max_connections,
            acquire_timeout: Duration::from_millis(acquire_timeout_ms),
            statement_timeout_ms,
            max_body_bytes,
        })
    }
}

impl DatabaseUrl {
    /// Wraps a URL without checking it.
    pub fn new(url: String) -> Self {
        Self(url)
    }

    /// Checks that `url` is a PostgreSQL URL sqlx can use.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Invalid`] for `backend.database_url`; the
    /// message never repeats the URL, which may contain a password.
    pub fn parse(url: String) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "backend.database_url",
            value: "[redacted]".into(),
            reason: reason.into(),
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "expected a URL starting with postgres:// or postgresql://",
            ));
        }
        if PgConnectOptions::from_str(&url).is_err() {
            return Err(invalid("not a valid PostgreSQL connection URL"));
        }
        Ok(Self(url))
    }

    /// Returns the URL for connecting. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

fn parse_header_name(
    key: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<HeaderName, ConfigError> {
    let text = value.unwrap_or(default);
    HeaderName::from_str(text).map_err(|_| ConfigError::Invalid {
        key,
        value: format!("{text:?}"),
        reason: "expected an HTTP header name such as \"X-User-Id\"".into(),
    })
}

fn check_range<T>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: format!("expected a value from {} to {}", range.start(), range.end()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://authenticator@127.0.0.1:5432/items";

    fn backend_with_url() -> BackendFile {
        BackendFile {
            database_url: Some(URL.into()),
            ..BackendFile::default()
        }
    }

    fn invalid_key(result: Result<Config, ConfigError>) -> &'static str {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn shipped_config_toml_validates() {
        let text = include_str!("../../config.toml");
        let config = Config::from_toml(text, None).expect("config.toml is valid");
        assert!(config.listen.ip().is_loopback());
    }

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let config = Config::validate(backend_with_url(), None).expect("valid");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.user_id_header.as_str(), "x-user-id");
        assert_eq!(config.email_header.as_str(), "x-user-email");
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.acquire_timeout, Duration::from_millis(5_000));
        assert_eq!(config.statement_timeout_ms, 10_000);
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn environment_url_overrides_file_url() {
        let other = "postgres://authenticator@127.0.0.1:6543/other";
        let config = Config::validate(backend_with_url(), Some(other.into())).expect("valid");
        assert_eq!(config.database_url.expose(), other);
    }

    #[test]
    fn empty_environment_url_is_ignored() {
        let config = Config::validate(backend_with_url(), Some(String::new())).expect("valid");
        assert_eq!(config.database_url.expose(), URL);
    }

    #[test]
    fn missing_database_url_is_rejected() {
        let result = Config::validate(BackendFile::default(), None);
        assert!(matches!(
            result,
            Err(ConfigError::Missing {
                key: "backend.database_url",
                ..
            })
        ));
    }

    #[test]
    fn non_postgres_database_url_is_rejected_without_echoing_it() {
        let backend = BackendFile {
            database_url: Some("mysql://user:secret@host/db".into()),
            ..BackendFile::default()
        };
        let error = Config::validate(backend, None).expect_err("must be rejected");
        let message = error.to_string();
        assert!(message.contains("backend.database_url"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn database_url_debug_is_redacted() {
        let url = DatabaseUrl::new("postgres://user:secret@host/db".into());
        assert_eq!(format!("{url:?}"), "[redacted]");
        assert_eq!(url.to_string(), "[redacted]");
    }

    #[test]
    fn invalid_listen_is_rejected() {
        let backend = BackendFile {
            listen: Some("localhost".into()),
            ..backend_with_url()
        };
        assert_eq!(
            invalid_key(Config::validate(backend, None)),
            "backend.listen"
        );
    }

    #[test]
    fn invalid_header_name_is_rejected() {
        let backend = BackendFile {
            user_id_header: Some("X User".into()),
            ..backend_with_url()
        };
        assert_eq!(
            invalid_key(Config::validate(backend, None)),
            "backend.user_id_header"
        );
    }

    #[test]
    fn identical_header_names_are_rejected() {
        let backend = BackendFile {
            email_header: Some("x-user-id".into()),
            ..backend_with_url()
        };
        assert_eq!(
            invalid_key(Config::validate(backend, None)),
            "backend.email_header"
        );
    }

    #[test]
    fn zero_max_connections_is_rejected() {
        let backend = BackendFile {
            max_connections: Some(0),
            ..backend_with_url()
        };
        assert_eq!(
            invalid_key(Config::validate(backend, None)),
            "backend.max_connections"
        );
    }

    #[test]
    fn zero_acquire_timeout_is_rejected() {
        let backend = BackendFile {
            acquire_timeout_ms: Some(0),
            ..backend_with_url()
        };
        assert_eq!(
            invalid_key(Config::validate(backend, None)),
            "backend.acquire_timeout_ms"
        );
    }

    #[test]
    fn statement_timeout_out_of_range_is_rejected() {
        for value in [0, 600_001] {
            let backend = BackendFile {
                statement_timeout_ms: Some(value),
                ..backend_with_url()
            };
            assert_eq!(
                invalid_key(Config::validate(backend, None)),
                "backend.statement_timeout_ms",
                "{value}"
            );
        }
    }

    #[test]
    fn tiny_max_body_bytes_is_rejected() {
        let backend = BackendFile {
            max_body_bytes: Some(10),
            ..backend_with_url()
        };
        assert_eq!(
            invalid_key(Config::validate(backend, None)),
            "backend.max_body_bytes"
        );
    }

    #[test]
    fn unknown_backend_key_is_rejected() {
        let text = format!("[backend]\ndatabase_url = \"{URL}\"\npool = 3\n");
        assert!(matches!(
            Config::from_toml(&text, None),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn unknown_top_level_key_is_rejected() {
        let text = format!("[backend]\ndatabase_url = \"{URL}\"\n[other]\nx = 1\n");
        assert!(matches!(
            Config::from_toml(&text, None),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn syntax_error_names_the_line_without_its_text() {
        let text = "[backend]\ndatabase_url = \"postgres://app:s3cret@db/items\n";

        let error = Config::from_toml(text, None).expect_err("unterminated string");

        let message = error.to_string();
        assert!(
            message.starts_with("invalid TOML: line 2, column 47: "),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn proxy_table_is_accepted_and_ignored() {
        let text = format!("[proxy]\nanything = 1\n[backend]\ndatabase_url = \"{URL}\"\n");
        assert!(Config::from_toml(&text, None).is_ok());
    }
}
