//! `item-api serve`: binds the listener, builds the pool and serves until
//! SIGTERM or SIGINT, then finishes the requests in flight.

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::Database;
use crate::{AppState, app};

/// Serves the API described by `config` until a stop signal arrives.
///
/// The database may be down at startup: the server still starts, logs a
/// warning and reports 503 on `/readyz` until the database is reachable.
///
/// # Errors
///
/// Returns an error when the listen address cannot be bound or the server
/// fails.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let database = Database::connect_lazy(&config)
        .context("building the connection pool for backend.database_url")?;
    if let Err(error) = database.ping().await {
        tracing::warn!(%error, "the database is not reachable yet; /readyz returns 503 until it is");
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding backend.listen = {}", config.listen))?;
    let state = AppState::new(
        database.clone(),
        config.user_id_header.clone(),
        config.email_header.clone(),
    );
    let router = app(state, config.max_body_bytes);

    tracing::info!(
        listen = %config.listen,
        max_connections = config.max_connections,
        user_id_header = %config.user_id_header,
        "item-api serving"
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(stop_signal())
        .await
        .context("serving HTTP")?;

    database.pool().close().await;
    tracing::info!("item-api stopped");
    Ok(())
}

/// Completes when SIGTERM or SIGINT arrives.
async fn stop_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works on Unix");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received; finishing requests in flight"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; finishing requests in flight"),
    }
}
