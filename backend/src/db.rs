//! Database access: the connection pool and the per-request transaction
//! that carries the caller's identity into PostgreSQL.
//!
//! Each request runs in one transaction that first sets `role` and
//! `request.jwt.claims` with `set_config(..., true)`, so both end with the
//! transaction and a pooled connection always returns without them. Nothing
//! here sets anything at session level. The same statement checks that
//! row-level security still applies to the role.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::config::Config;
use crate::identity::Identity;

/// The pool of `authenticator` connections, with a count of requests
/// waiting for one.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    waiting: Arc<AtomicU64>,
}

/// Counts one waiting request for as long as it lives, so a request that is
/// cancelled while waiting is uncounted too.
struct WaitingGuard<'a>(&'a AtomicU64);

impl Database {
    /// Creates a pool that connects on first use, so the server starts (and
    /// `/readyz` reports 503) while the database is still down.
    ///
    /// # Errors
    ///
    /// Returns an error when the URL cannot be parsed.
    pub fn connect_lazy(config: &Config) -> Result<Self, sqlx::Error> {
        // A statement stuck behind a lock would otherwise hold its pooled
        // connection until the database gives up, long after the client has.
        let statement_timeout = format!("{}ms", config.statement_timeout_ms);
        let options = PgConnectOptions::from_str(config.database_url.expose())?
            .application_name("item-api")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .after_connect(|connection, _| Box::pin(check_connection(connection)))
            .connect_lazy_with(options);
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            waiting: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Returns the underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Number of requests currently waiting for a pooled connection.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Number of pooled connections lent out to requests right now.
    pub fn in_use(&self) -> u64 {
        let size = u64::from(self.pool.size());
        let idle = u64::try_from(self.pool.num_idle()).unwrap_or(u64::MAX);
        size.saturating_sub(idle)
    }

    /// Begins a transaction acting as `identity`: role `authenticated` and
    /// `request.jwt.claims` set to `{"sub", "role", "email"?}`, both local to
    /// the transaction. Dropping the transaction without committing rolls
    /// it back, which also clears both settings.
    ///
    /// # Errors
    ///
    /// Returns the database error when no connection is available in time or
    /// a statement fails, and [`sqlx::Error::Configuration`] (503) when
    /// row-level security does not apply to the role.
    pub async fn begin_as(
        &self,
        identity: &Identity,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut transaction = {
            let _waiting = WaitingGuard::new(&self.waiting);
            self.pool.begin().await?
        };

        let row_security_active: bool = sqlx::query_scalar(BEGIN_AS)
            .bind(claims_json(identity))
            .fetch_one(&mut *transaction)
            .await?;
        if !row_security_active {
            // Dropping the transaction rolls back the role switch.
            return Err(sqlx::Error::Configuration(
                "refusing the transaction: row-level security does not apply to api.items \
                 for role authenticated; check the role for SUPERUSER or BYPASSRLS and the \
                 table for disabled row security"
                    .into(),
            ));
        }

        Ok(transaction)
    }

    /// Checks that a connection can be made and used.
    ///
    /// # Errors
    ///
    /// Returns the database error when the check fails.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let _waiting = WaitingGuard::new(&self.waiting);
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }
}

impl<'a> WaitingGuard<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Switches to `authenticated`, sets the claims to `$1` and returns whether
/// row-level security applies to api.items for the new role. Checking here
/// costs no extra round trip and catches a role changed after its
/// connection was checked. The subquery (kept apart by `offset 0`) runs both
/// `set_config` calls before the outer select reads the role.
const BEGIN_AS: &str = "\
    select pg_catalog.row_security_active('api.items') \
    from (select pg_catalog.set_config('role', 'authenticated', true), \
                 pg_catalog.set_config('request.jwt.claims', $1, true) \
          offset 0) as switched";

/// Returns why requests on this connection could be served wrongly, or
/// NULL when they cannot. A database encoding other than UTF8 would store
/// or reject text other than as item-api validated it. The other reasons
/// let requests escape row-level security: `authenticated` is
/// missing, has SUPERUSER or BYPASSRLS, or is a member of another role. Or
/// the login role has SUPERUSER or BYPASSRLS, or can switch to a role that
/// has, such as `anon` after a failed migration.
const CONNECTION_PROBLEM: &str = "\
    select case \
        when pg_catalog.current_setting('server_encoding') <> 'UTF8' \
            then pg_catalog.format('database %I has the encoding %s, but item-api needs UTF8; \
                                    create the database with ENCODING ''UTF8''', \
                                   pg_catalog.current_database(), \
                                   pg_catalog.current_setting('server_encoding')) \
        when r.oid is null then 'role authenticated does not exist; run item-api migrate' \
        when r.rolsuper or r.rolbypassrls \
            then 'role authenticated has the SUPERUSER or BYPASSRLS attribute' \
        when exists (select 1 from pg_catalog.pg_auth_members m where m.member = r.oid) \
            then 'role authenticated is a member of another role' \
        else ( \
            select case \
                when s.rolname = current_user \
                    then pg_catalog.format('role %I has the SUPERUSER or BYPASSRLS attribute', \
                                           s.rolname) \
                else pg_catalog.format('role %I can switch to role %I, which has the \
                                        SUPERUSER or BYPASSRLS attribute', \
                                       current_user, s.rolname) \
            end \
            from pg_catalog.pg_roles s \
            where (s.rolsuper or s.rolbypassrls) \
              and pg_catalog.pg_has_role(current_user, s.oid, 'member') \
            order by s.rolname = current_user desc, s.rolname \
            limit 1) \
    end \
    from (values (1)) as one \
    left join pg_catalog.pg_roles r on r.rolname = 'authenticated'";

/// Refuses a new pooled connection to a database not in UTF8, or when
/// requests on it would escape row-level security, for example because `item-api migrate` failed or
/// someone changed a role since. The pool then keeps retrying until
/// `acquire_timeout`, so requests get 503, and sqlx logs the reason.
async fn check_connection(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    let problem: Option<String> = sqlx::query_scalar(CONNECTION_PROBLEM)
        .fetch_one(&mut *connection)
        .await?;
    connection_verdict(problem)
}

/// Converts the result of [`CONNECTION_PROBLEM`] into the pool's verdict.
fn connection_verdict(problem: Option<String>) -> Result<(), sqlx::Error> {
    match problem {
        None => Ok(()),
        Some(reason) => Err(sqlx::Error::Configuration(
            format!("refusing the connection: {reason}").into(),
        )),
    }
}

/// Builds the `request.jwt.claims` value in the shape PostgREST uses, so
/// the same policies work behind either.
pub fn claims_json(identity: &Identity) -> String {
    let mut claims = serde_json::json!({
        "sub": identity.user_id,
        "role": "authenticated",
    });
    if let Some(email) = &identity.email {
        claims["email"] = serde_json::Value::String(email.clone());
    }
    claims.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_without_problem_is_accepted() {
        assert!(connection_verdict(None).is_ok());
    }

    #[test]
    fn connection_problem_is_named_in_the_error() {
        let error = connection_verdict(Some("role anon has SUPERUSER".into()))
            .expect_err("a problem refuses the connection");
        assert!(matches!(error, sqlx::Error::Configuration(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("refusing the connection: role anon has SUPERUSER"),
            "{error}"
        );
    }

    #[test]
    fn claims_carry_sub_and_role() {
        let identity = Identity {
            user_id: "user-1".into(),
            email: None,
        };
        let claims: serde_json::Value =
            serde_json::from_str(&claims_json(&identity)).expect("valid JSON");
        assert_eq!(
            claims,
            serde_json::json!({"sub": "user-1", "role": "authenticated"})
        );
    }

    #[test]
    fn claims_carry_email_when_forwarded() {
        let identity = Identity {
            user_id: "user-1".into(),
            email: Some("ada@example.com".into()),
        };
        let claims: serde_json::Value =
            serde_json::from_str(&claims_json(&identity)).expect("valid JSON");
        assert_eq!(claims["email"], "ada@example.com");
    }

    #[test]
    fn claims_escape_quotes_in_user_id() {
        let identity = Identity {
            user_id: "a\"b".into(),
            email: None,
        };
        let claims: serde_json::Value =
            serde_json::from_str(&claims_json(&identity)).expect("valid JSON");
        assert_eq!(claims["sub"], "a\"b");
    }
}
