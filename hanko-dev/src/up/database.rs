//! The database side of `hanko-dev up`: the application database, the
//! `authenticator` password, and demo items for two demo users.
//!
//! Demo items are inserted the way item-api inserts them, as the
//! `authenticated` role with the user's claims set, so row-level security
//! checks them like any other write. Schema changes belong to
//! `item-api migrate`, never to this module.

use anyhow::{Context, Result};
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

/// The database `up` creates and item-api uses.
pub const DATABASE: &str = "hanko_edge";

/// CREATE DATABASE takes no bind parameters, and sqlx accepts only static
/// SQL text, so the name is spelled out; a test keeps it in step.
const CREATE_DATABASE: &str = "CREATE DATABASE hanko_edge";

/// A demo user: a fixed id, so tokens and rows match across runs.
pub struct DemoUser {
    /// The label in `up`'s output: `A` or `B`.
    pub label: &'static str,
    /// The user id (`sub`).
    pub id: Uuid,
    /// The email claim.
    pub email: &'static str,
    /// Items seeded when the user has none: title and description.
    pub items: &'static [(&'static str, Option<&'static str>)],
}

/// The two demo users.
pub const DEMO_USERS: [DemoUser; 2] = [
    DemoUser {
        label: "A",
        id: Uuid::from_u128(0xaaaaaaaa_aaaa_4aaa_8aaa_aaaaaaaaaaaa),
        email: "alice@example.com",
        items: &[
            (
                "Water the plants",
                Some("The fern in the hall needs it most."),
            ),
            ("Book train tickets", None),
        ],
    },
    DemoUser {
        label: "B",
        id: Uuid::from_u128(0xbbbbbbbb_bbbb_4bbb_8bbb_bbbbbbbbbbbb),
        email: "bob@example.com",
        items: &[("Renew passport", Some("It expires in March."))],
    },
];

/// Creates [`DATABASE`] unless it exists, connecting to `postgres_url`
/// (the superuser on the `postgres` database).
///
/// # Errors
///
/// Fails when the server cannot be reached or the statement fails.
pub async fn ensure_database(postgres_url: &str) -> Result<()> {
    let mut connection = PgConnection::connect(postgres_url)
        .await
        .context("connecting to PostgreSQL as postgres failed")?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(DATABASE)
        .fetch_optional(&mut connection)
        .await
        .context("looking up the application database failed")?;
    if exists.is_none() {
        sqlx::query(CREATE_DATABASE)
            .execute(&mut connection)
            .await
            .with_context(|| format!("creating the database {DATABASE} failed"))?;
    }
    connection.close().await.ok();
    Ok(())
}

/// Sets the login password of the `authenticator` role that item-api
/// connects as; migrations create the role without one.
///
/// # Errors
///
/// Fails when the role does not exist (migrations have not run) or the
/// statement fails.
pub async fn set_authenticator_password(admin_url: &str, password: &str) -> Result<()> {
    let mut connection = PgConnection::connect(admin_url)
        .await
        .context("connecting to the application database failed")?;
    // ALTER ROLE takes no bind parameters, so the password travels as a
    // transaction-local setting and format('%L') quotes it as a literal.
    let mut transaction = connection.begin().await.context("BEGIN failed")?;
    sqlx::query("SELECT set_config('hanko_dev.authenticator_password', $1, true)")
        .bind(password)
        .execute(&mut *transaction)
        .await
        .context("passing the authenticator password failed")?;
    sqlx::query(
        "DO $$ BEGIN EXECUTE format('ALTER ROLE authenticator WITH LOGIN PASSWORD %L', \
         current_setting('hanko_dev.authenticator_password')); END $$",
    )
    .execute(&mut *transaction)
    .await
    .context("setting the authenticator password failed; did `item-api migrate` run?")?;
    transaction.commit().await.context("COMMIT failed")?;
    connection.close().await.ok();
    Ok(())
}

/// Seeds each demo user's items unless the user already has some, and
/// returns the id of user A's first item for the 404 example.
///
/// # Errors
///
/// Fails when a statement fails, for example when the schema is missing.
pub async fn seed_demo_items(admin_url: &str) -> Result<i64> {
    let mut connection = PgConnection::connect(admin_url)
        .await
        .context("connecting to the application database failed")?;
    let mut first_item_of_a = None;

    for user in &DEMO_USERS {
        let mut transaction = connection.begin().await.context("BEGIN failed")?;
        sqlx::query("SET LOCAL ROLE authenticated")
            .execute(&mut *transaction)
            .await
            .context("switching to the authenticated role failed")?;
        let claims = serde_json::json!({ "sub": user.id.to_string(), "role": "authenticated" });
        sqlx::query("SELECT set_config('request.jwt.claims', $1, true)")
            .bind(claims.to_string())
            .execute(&mut *transaction)
            .await
            .context("setting request.jwt.claims failed")?;

        // Row-level security shows only this user's rows, so this counts
        // their items alone.
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api.items")
            .fetch_one(&mut *transaction)
            .await
            .context("counting demo items failed")?;
        if count == 0 {
            for (title, description) in user.items {
                sqlx::query("INSERT INTO api.items (title, description) VALUES ($1, $2)")
                    .bind(title)
                    .bind(description)
                    .execute(&mut *transaction)
                    .await
                    .with_context(|| format!("seeding demo item {title:?} failed"))?;
            }
        }
        let first: Option<i64> = sqlx::query_scalar("SELECT id FROM api.items ORDER BY id LIMIT 1")
            .fetch_optional(&mut *transaction)
            .await
            .context("reading demo items failed")?;
        transaction.commit().await.context("COMMIT failed")?;

        if user.label == "A" {
            first_item_of_a = first;
        }
    }
    connection.close().await.ok();
    first_item_of_a.context("user A has no items right after seeding")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_statement_names_the_database() {
        assert_eq!(CREATE_DATABASE, format!("CREATE DATABASE {DATABASE}"));
    }

    #[test]
    fn demo_users_have_distinct_v4_ids() {
        assert_ne!(DEMO_USERS[0].id, DEMO_USERS[1].id);
        for user in &DEMO_USERS {
            assert_eq!(user.id.get_version_num(), 4, "{}", user.id);
            assert!(!user.items.is_empty(), "{} has no demo items", user.label);
        }
    }
}
