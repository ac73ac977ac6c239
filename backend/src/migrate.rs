//! `item-api migrate`: applies the SQL migrations embedded from `sql/`.
//!
//! sqlx records applied migrations in `_sqlx_migrations` and holds an
//! advisory lock while it runs, so running it again, or from two processes
//! at once against one database, applies each migration once. Each
//! migration commits on its own, so the roles that would make a later one
//! fail are checked before the first runs (see [`crate::migrate_preflight`]).

use std::str::FromStr as _;

use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::config::DatabaseUrl;

/// The migrations in `sql/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../sql");

/// Connects to `url`, checks the existing request roles and applies every
/// pending migration.
///
/// # Errors
///
/// Returns an error when the URL is invalid, the connection fails, the
/// role check fails or a migration fails. The URL itself is never part of
/// the message.
pub async fn run(url: &DatabaseUrl) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url.expose())
        .context("parsing --database-url (value hidden because it may contain a password)")?
        .application_name("item-api migrate");
    let mut connection = PgConnection::connect_with(&options)
        .await
        .context("connecting to the database given by --database-url or ITEM_API_MIGRATE_URL")?;

    crate::migrate_preflight::check(&mut connection)
        .await
        .context("checking the existing roles anon and authenticated")?;

    tracing::info!(migrations = MIGRATOR.iter().count(), "applying migrations");
    MIGRATOR
        .run(&mut connection)
        .await
        .context("applying migrations")?;
    connection
        .close()
        .await
        .context("closing the migration connection")?;
    tracing::info!("migrations applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_reads_the_migrator_table() {
        // migrate_preflight names this table in its SQL.
        assert_eq!(MIGRATOR.table_name, "_sqlx_migrations");
    }
}
