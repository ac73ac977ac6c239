//! Config reload on SIGHUP.
//!
//! The reloader reads the config file again through [`Config::load`], the
//! same path `edge-proxy check` takes. An invalid file changes nothing: the
//! error, naming each bad key and value, is logged and counted. A valid file
//! becomes a new [`Runtime`] stored in the shared `ArcSwap`. A request loads
//! the runtime once when it starts, so requests in flight finish under the
//! config they started with, and the next request on an idle keep-alive
//! connection uses the new one. Connections are never closed by a reload.
//!
//! The key source (its keys and refresh loop) carries over when the key set
//! URL, the algorithms and the `[proxy.auth.jwks]` timings are unchanged, and
//! the verified-token cache when every setting a cached identity depends on
//! is unchanged too. A new key source must load its key set before the swap,
//! otherwise the reload fails and the running config stays.
//!
//! Settings bound when the process starts (listeners, threads, the upgrade
//! socket, shutdown timings, the upstream pool size) are not reloaded: a
//! change to one is logged as needing a restart and the rest of the file
//! applies.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::auth::jwks::KeySource;
use crate::config::{AuthConfig, Config};
use crate::metrics;
use crate::runtime::{Runtime, SharedRuntime};

/// Reloads the config file on each SIGHUP.
pub struct ConfigReloader {
    path: PathBuf,
    startup: Config,
    runtime: SharedRuntime,
    key_source_changed: Arc<Notify>,
}

/// A setting whose new value only takes effect after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartOnly {
    /// The config key, such as `proxy.listen`.
    pub key: &'static str,
    /// The value in force.
    pub running: String,
    /// The value in the reloaded file.
    pub file: String,
}

impl ConfigReloader {
    /// Creates the reloader for the file at `path`, which the process started
    /// with as `startup`. `key_source_changed` is raised after a reload
    /// stores a runtime with a new key source.
    pub fn new(
        path: PathBuf,
        startup: Config,
        runtime: SharedRuntime,
        key_source_changed: Arc<Notify>,
    ) -> Self {
        Self {
            path,
            startup,
            runtime,
            key_source_changed,
        }
    }

    /// Loads the file and swaps in a runtime built from it. Returns the new
    /// config, which the next reload compares against.
    async fn reload(&self, running: &Config) -> anyhow::Result<Config> {
        let path = self.path.clone();
        // Validation resolves upstream host names, which blocks.
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .context("the config reload task failed")??;

        for change in restart_only_changes(&self.startup, &config) {
            tracing::warn!(
                key = change.key,
                running = %change.running,
                file = %change.file,
                "changing this setting needs a restart; the running value stays in use"
            );
        }

        let current = self.runtime.load_full();
        let same_keys = same_key_source(&running.auth, &config.auth);
        let keys = if same_keys {
            current.authenticator.keys().clone()
        } else {
            load_key_source(&config.auth).await?
        };
        let mut runtime = Runtime::new(&config, keys);
        // Rate limit buckets and cached session responses survive a reload
        // when their settings did not change; otherwise every SIGHUP would
        // hand each limited user a fresh burst.
        runtime.router.share_rate_limiters(&current.router);
        runtime
            .authenticator
            .share_session_checker(&current.authenticator);
        let same_cache = same_keys && same_token_checks(&running.auth, &config.auth);
        if same_cache {
            runtime
                .authenticator
                .share_token_cache(&current.authenticator);
        }

        self.runtime.store(Arc::new(runtime));
        if !same_keys {
            self.key_source_changed.notify_one();
        }
        tracing::info!(
            config = %self.path.display(),
            routes = config.routes.len(),
            jwks_url = %config.auth.jwks_url,
            key_source = if same_keys { "kept" } else { "new" },
            token_cache = if same_cache { "kept" } else { "new" },
            "config reloaded"
        );
        Ok(config)
    }
}

#[async_trait]
impl BackgroundService for ConfigReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::error!(%error, "listening for SIGHUP failed; config reload is off");
                return;
            }
        };
        let mut running = self.startup.clone();

        loop {
            tokio::select! {
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
            }
            tracing::info!(config = %self.path.display(), "SIGHUP received; reloading the config");
            match self.reload(&running).await {
                Ok(config) => {
                    running = config;
                    metrics::record_reload(true);
                }
                Err(error) => {
                    tracing::error!(
                        config = %self.path.display(),
                        error = %one_line(&error),
                        "config reload failed; the running config stays in use"
                    );
                    metrics::record_reload(false);
                }
            }
        }
    }
}

/// Installs the SIGHUP handler before the services start.
///
/// SIGHUP ends a process by default. Tokio's handler, once installed, stays
/// for the life of the process, so after this call a SIGHUP that arrives
/// before the reload service listens is dropped instead of stopping the
/// proxy.
///
/// # Errors
///
/// Fails when the signal handler or the short-lived runtime used to install
/// it cannot be created.
pub fn install_hangup_handler() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("creating a runtime to install the SIGHUP handler failed")?;
    runtime
        .block_on(async { signal(SignalKind::hangup()).map(drop) })
        .context("installing the SIGHUP handler failed")
}

/// Joins the lines of `error` with "; ". A config error lists one problem
/// per line; one line keeps the log event whole.
fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Creates a key source for `auth` and loads its key set.
async fn load_key_source(auth: &AuthConfig) -> anyhow::Result<Arc<KeySource>> {
    let keys = KeySource::new(
        auth.jwks_url.clone(),
        auth.policy.algorithms.clone(),
        auth.jwks,
    )
    .with_context(|| format!("preparing the key source for {} failed", auth.jwks_url))?;
    keys.current().await.map_err(|_| {
        anyhow::anyhow!(
            "loading the key set from {} failed; fix the key set or the URL and send SIGHUP again",
            auth.jwks_url
        )
    })?;
    Ok(Arc::new(keys))
}

/// Reports whether a key source built for `running` serves `file` as well.
fn same_key_source(running: &AuthConfig, file: &AuthConfig) -> bool {
    running.jwks_url == file.jwks_url
        && running.policy.algorithms == file.policy.algorithms
        && running.jwks == file.jwks
}

/// Reports whether an identity cached under `running` means the same under
/// `file`: same checks, same upstream headers, same cache bounds.
fn same_token_checks(running: &AuthConfig, file: &AuthConfig) -> bool {
    running.policy == file.policy
        && running.user_id_header == file.user_id_header
        && running.claim_headers == file.claim_headers
        && running.token_cache == file.token_cache
}

/// Lists the settings that differ between the running process and `file`
/// but only take effect after a restart.
pub fn restart_only_changes(running: &Config, file: &Config) -> Vec<RestartOnly> {
    let mut changes = Vec::new();
    let mut compare = |key: &'static str, running: String, file: String| {
        if running != file {
            changes.push(RestartOnly { key, running, file });
        }
    };
    compare(
        "proxy.listen",
        format!("{:?}", running.listen),
        format!("{:?}", file.listen),
    );
    compare(
        "proxy.admin_listen",
        running.admin_listen.to_string(),
        file.admin_listen.to_string(),
    );
    compare(
        "proxy.worker_threads",
        running.worker_threads.to_string(),
        file.worker_threads.to_string(),
    );
    compare(
        "proxy.upgrade_socket",
        running.upgrade_socket.path().display().to_string(),
        file.upgrade_socket.path().display().to_string(),
    );
    compare(
        "proxy.grace_period_seconds",
        running.grace_period.as_secs().to_string(),
        file.grace_period.as_secs().to_string(),
    );
    compare(
        "proxy.shutdown_timeout_seconds",
        running.shutdown_timeout.as_secs().to_string(),
        file.shutdown_timeout.as_secs().to_string(),
    );
    compare(
        "proxy.upstream_keepalive_pool_size",
        running.upstream_keepalive_pool_size.to_string(),
        file.upstream_keepalive_pool_size.to_string(),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(proxy_lines: &str, auth_lines: &str) -> Config {
        let audience = if auth_lines.contains("audience") {
            ""
        } else {
            "audience = \"localhost\""
        };
        let text = format!(
            r#"
            [proxy]
            {proxy_lines}
            [proxy.auth]
            hanko_api_url = "http://127.0.0.1:8000"
            {audience}
            {auth_lines}
            [[proxy.routes]]
            path_prefix = "/api"
            upstream = "127.0.0.1:8081"
            auth = "required"
            "#
        );
        Config::from_toml(&text).expect("the test config is valid")
    }

    #[test]
    fn reload_error_is_one_line() {
        let error = Config::from_toml("[proxy]\nlisten = 5\n")
            .map_err(anyhow::Error::from)
            .expect_err("the config is invalid");
        let line = one_line(&error);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("line 2, column 10"), "{line}");
        assert!(line.contains("expected a sequence"), "{line}");
    }

    #[test]
    fn unchanged_file_needs_no_restart() {
        let running = config("", "");
        assert_eq!(restart_only_changes(&running, &config("", "")), []);
    }

    #[test]
    fn listener_and_thread_changes_need_restart() {
        let running = config("", "");
        let file = config(
            "listen = [\"127.0.0.1:8181\"]\nworker_threads = 1\ngrace_period_seconds = 3",
            "",
        );
        let keys: Vec<_> = restart_only_changes(&running, &file)
            .into_iter()
            .map(|change| change.key)
            .collect();
        assert_eq!(
            keys,
            [
                "proxy.listen",
                "proxy.worker_threads",
                "proxy.grace_period_seconds"
            ]
        );
    }

    #[test]
    fn restart_change_names_both_values() {
        let changes = restart_only_changes(
            &config("", ""),
            &config("upstream_keepalive_pool_size = 64", ""),
        );
        assert_eq!(
            changes,
            [RestartOnly {
                key: "proxy.upstream_keepalive_pool_size",
                running: "128".to_owned(),
                file: "64".to_owned(),
            }]
        );
    }

    #[test]
    fn key_source_kept_when_key_settings_match() {
        let running = config("", "");
        let audience_changed = config("", "audience = \"other\"");
        assert!(same_key_source(&running.auth, &audience_changed.auth));
    }

    #[test]
    fn key_source_replaced_when_key_settings_change() {
        let running = config("", "");
        for auth_lines in [
            "jwks_url = \"http://127.0.0.1:8001/keys.json\"",
            "algorithms = [\"RS256\", \"ES256\"]",
            "[proxy.auth.jwks]\nrefresh_seconds = 60",
        ] {
            let file = config("", auth_lines);
            assert!(
                !same_key_source(&running.auth, &file.auth),
                "{auth_lines} must start a new key source"
            );
        }
    }

    #[test]
    fn token_cache_kept_only_for_same_checks() {
        let running = config("", "");
        assert!(same_token_checks(&running.auth, &config("", "").auth));
        assert!(same_token_checks(
            &running.auth,
            &config("", "cookie_name = \"session\"").auth
        ));
        for auth_lines in [
            "audience = \"other\"",
            "leeway_seconds = 5",
            "issuer = \"https://auth.example.com\"",
            "user_id_header = \"X-Subject\"",
            "[proxy.auth.claim_headers]\n\"email.address\" = \"X-Mail\"",
            "[proxy.auth.token_cache]\nttl_seconds = 10",
        ] {
            let file = config("", auth_lines);
            assert!(
                !same_token_checks(&running.auth, &file.auth),
                "{auth_lines} must empty the token cache"
            );
        }
    }
}
