//! Row-level security checked in SQL, connected as `authenticator` the way
//! item-api connects, without going through item-api's handlers. Also
//! checks that item-api's per-request transactions leave nothing behind on
//! a pooled connection.

use hanko_edge_tests::pg::TestDatabase;
use item_api::db::Database;
use item_api::identity::Identity;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnection, PgPoolOptions};

const ALICE: &str = "alice-0001";
const BOB: &str = "bob-0002";
const ROOT: &str = "root-0003";

/// Begins a transaction acting as `user`, exactly as item-api does.
async fn begin_as<'c>(
    connection: &'c mut PgConnection,
    user: &str,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut transaction = connection.begin().await.expect("begin");
    let claims = serde_json::json!({"sub": user, "role": "authenticated"}).to_string();
    sqlx::query(
        "select pg_catalog.set_config('role', 'authenticated', true), \
                pg_catalog.set_config('request.jwt.claims', $1, true)",
    )
    .bind(claims)
    .execute(&mut *transaction)
    .await
    .expect("setting role and claims");
    transaction
}

async fn insert_item(connection: &mut PgConnection, user: &str, title: &str) -> i64 {
    let mut transaction = begin_as(connection, user).await;
    let id: i64 = sqlx::query_scalar("insert into api.items (title) values ($1) returning id")
        .bind(title)
        .fetch_one(&mut *transaction)
        .await
        .expect("insert as owner");
    transaction.commit().await.expect("commit");
    id
}

async fn visible_titles(connection: &mut PgConnection, user: &str) -> Vec<String> {
    let mut transaction = begin_as(connection, user).await;
    let titles = sqlx::query_scalar("select title from api.items order by id")
        .fetch_all(&mut *transaction)
        .await
        .expect("select");
    transaction.commit().await.expect("commit");
    titles
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|database_error| database_error.code())
        .map(|code| code.into_owned())
}

#[tokio::test]
async fn other_user_cannot_see_update_or_delete() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;
    let alice_item = insert_item(&mut connection, ALICE, "alice's").await;

    let mut transaction = begin_as(&mut connection, BOB).await;
    let seen: Vec<i64> = sqlx::query_scalar("select id from api.items")
        .fetch_all(&mut *transaction)
        .await
        .expect("select");
    assert!(seen.is_empty(), "bob sees {seen:?}");

    let by_id: Option<i64> = sqlx::query_scalar("select id from api.items where id = $1")
        .bind(alice_item)
        .fetch_optional(&mut *transaction)
        .await
        .expect("select by id");
    assert_eq!(by_id, None);

    let updated = sqlx::query("update api.items set title = 'stolen' where id = $1")
        .bind(alice_item)
        .execute(&mut *transaction)
        .await
        .expect("update");
    assert_eq!(updated.rows_affected(), 0);

    let deleted = sqlx::query("delete from api.items where id = $1")
        .bind(alice_item)
        .execute(&mut *transaction)
        .await
        .expect("delete");
    assert_eq!(deleted.rows_affected(), 0);
    transaction.commit().await.expect("commit");

    assert_eq!(visible_titles(&mut connection, ALICE).await, ["alice's"]);
}

#[tokio::test]
async fn update_without_where_touches_own_rows_only() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;
    insert_item(&mut connection, ALICE, "alice 1").await;
    insert_item(&mut connection, ALICE, "alice 2").await;
    insert_item(&mut connection, BOB, "bob 1").await;

    let mut transaction = begin_as(&mut connection, BOB).await;
    let updated = sqlx::query("update api.items set title = 'everything is bob''s'")
        .execute(&mut *transaction)
        .await
        .expect("update without where");
    assert_eq!(updated.rows_affected(), 1);
    let deleted = sqlx::query("delete from api.items")
        .execute(&mut *transaction)
        .await
        .expect("delete without where");
    assert_eq!(deleted.rows_affected(), 1);
    transaction.commit().await.expect("commit");

    assert_eq!(
        visible_titles(&mut connection, ALICE).await,
        ["alice 1", "alice 2"]
    );
    assert!(visible_titles(&mut connection, BOB).await.is_empty());
}

#[tokio::test]
async fn insert_for_another_owner_is_rejected() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;

    let mut transaction = begin_as(&mut connection, BOB).await;
    let error = sqlx::query("insert into api.items (title, owner_id) values ('x', $1)")
        .bind(ALICE)
        .execute(&mut *transaction)
        .await
        .expect_err("owner_id is not insertable");
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
    drop(transaction);

    assert!(visible_titles(&mut connection, ALICE).await.is_empty());
}

#[tokio::test]
async fn insert_without_claims_is_rejected() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;

    let mut transaction = connection.begin().await.expect("begin");
    sqlx::query("select set_config('role', 'authenticated', true)")
        .execute(&mut *transaction)
        .await
        .expect("set role");
    let error = sqlx::query("insert into api.items (title) values ('nobody')")
        .execute(&mut *transaction)
        .await
        .expect_err("an item needs an owner");
    // owner_id defaults to NULL without claims, so the insert policy's
    // check (owner_id = NULL) fails before the NOT NULL constraint.
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
}

#[tokio::test]
async fn owner_id_is_not_updatable() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;
    let id = insert_item(&mut connection, ALICE, "mine").await;

    let mut transaction = begin_as(&mut connection, ALICE).await;
    let error = sqlx::query("update api.items set owner_id = $1 where id = $2")
        .bind(BOB)
        .bind(id)
        .execute(&mut *transaction)
        .await
        .expect_err("owner_id has no update grant");
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
}

#[tokio::test]
async fn authenticator_alone_has_no_table_access() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;

    let error = sqlx::query("select * from api.items")
        .execute(&mut connection)
        .await
        .expect_err("authenticator has no privileges of its own");
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");

    let error = sqlx::query("insert into api.superusers values ('me')")
        .execute(&mut connection)
        .await
        .expect_err("authenticator cannot make itself a superuser");
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
}

#[tokio::test]
async fn anon_gets_nothing() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;

    let mut transaction = connection.begin().await.expect("begin");
    sqlx::query("select set_config('role', 'anon', true)")
        .execute(&mut *transaction)
        .await
        .expect("set role anon");
    let error = sqlx::query("select * from api.items")
        .execute(&mut *transaction)
        .await
        .expect_err("anon has no access");
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
}

#[tokio::test]
async fn authenticated_cannot_write_superusers() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;

    let mut transaction = begin_as(&mut connection, BOB).await;
    let error = sqlx::query("insert into api.superusers values ($1)")
        .bind(BOB)
        .execute(&mut *transaction)
        .await
        .expect_err("only administrators edit api.superusers");
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
}

#[tokio::test]
async fn roles_and_table_have_safe_attributes() {
    let database = TestDatabase::new().await;
    let mut admin = database.admin().await;

    let (superuser, bypass, inherit, login): (bool, bool, bool, bool) = sqlx::query_as(
        "select rolsuper, rolbypassrls, rolinherit, rolcanlogin \
         from pg_roles where rolname = 'authenticator'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("authenticator exists");
    assert!(!superuser, "authenticator must not be a superuser");
    assert!(!bypass, "authenticator must not bypass RLS");
    assert!(!inherit, "authenticator must be NOINHERIT");
    assert!(login, "authenticator must be able to log in");

    for role in ["anon", "authenticated"] {
        let (login, member): (bool, bool) = sqlx::query_as(
            "select rolcanlogin, pg_has_role('authenticator', oid, 'member') \
             from pg_roles where rolname = $1",
        )
        .bind(role)
        .fetch_one(&mut admin)
        .await
        .expect("role exists");
        assert!(!login, "{role} must be NOLOGIN");
        assert!(member, "{role} must be granted to authenticator");
    }

    let owner: String = sqlx::query_scalar(
        "select tableowner from pg_tables where schemaname = 'api' and tablename = 'items'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("api.items exists");
    assert_ne!(owner, "authenticator");

    let (enabled, forced): (bool, bool) = sqlx::query_as(
        "select relrowsecurity, relforcerowsecurity from pg_class where oid = 'api.items'::regclass",
    )
    .fetch_one(&mut admin)
    .await
    .expect("api.items exists");
    assert!(enabled, "row-level security must be enabled");
    assert!(forced, "row-level security must be forced");

    let authenticator_privileges: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.role_table_grants \
         where grantee in ('authenticator', 'anon') and table_schema = 'api'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("grants query");
    assert_eq!(authenticator_privileges, 0);

    let policy_roles: Vec<String> = sqlx::query_scalar(
        "select distinct unnest(roles)::text from pg_policies where schemaname = 'api'",
    )
    .fetch_all(&mut admin)
    .await
    .expect("policies query");
    assert_eq!(policy_roles, ["authenticated"]);
}

#[tokio::test]
async fn superuser_reads_updates_and_deletes_all() {
    let database = TestDatabase::new().await;
    let mut admin = database.admin().await;
    sqlx::query("insert into api.superusers (user_id) values ($1)")
        .bind(ROOT)
        .execute(&mut admin)
        .await
        .expect("adding a superuser");

    let mut connection = database.authenticator().await;
    let alice_item = insert_item(&mut connection, ALICE, "alice's").await;
    let bob_item = insert_item(&mut connection, BOB, "bob's").await;

    assert_eq!(
        visible_titles(&mut connection, ROOT).await,
        ["alice's", "bob's"]
    );

    let mut transaction = begin_as(&mut connection, ROOT).await;
    let updated = sqlx::query("update api.items set title = 'moderated' where id = $1")
        .bind(alice_item)
        .execute(&mut *transaction)
        .await
        .expect("superuser update");
    assert_eq!(updated.rows_affected(), 1);
    let deleted = sqlx::query("delete from api.items where id = $1")
        .bind(bob_item)
        .execute(&mut *transaction)
        .await
        .expect("superuser delete");
    assert_eq!(deleted.rows_affected(), 1);
    transaction.commit().await.expect("commit");

    assert_eq!(visible_titles(&mut connection, ALICE).await, ["moderated"]);
    assert!(visible_titles(&mut connection, BOB).await.is_empty());
    // Superuser rights cover other users' rows, not other users' identity.
    let owner: String = sqlx::query_scalar("select owner_id from api.items where id = $1")
        .bind(alice_item)
        .fetch_one(&mut admin)
        .await
        .expect("row exists");
    assert_eq!(owner, ALICE);
}

/// Reads `api.current_user_id()` as role `authenticated` with whatever
/// claims the connection has outside this transaction.
async fn user_id_without_claims(connection: &mut PgConnection) -> Option<String> {
    let mut transaction = connection.begin().await.expect("begin");
    sqlx::query("select set_config('role', 'authenticated', true)")
        .execute(&mut *transaction)
        .await
        .expect("set role");
    sqlx::query_scalar("select api.current_user_id()")
        .fetch_one(&mut *transaction)
        .await
        .expect("current user id")
}

#[tokio::test]
async fn current_user_id_is_null_without_claims() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;

    assert_eq!(user_id_without_claims(&mut connection).await, None);

    // After a transaction that set the claims ends, the setting reads as ''.
    let transaction = begin_as(&mut connection, ALICE).await;
    transaction.commit().await.expect("commit");
    let raw: Option<String> =
        sqlx::query_scalar("select current_setting('request.jwt.claims', true)")
            .fetch_one(&mut connection)
            .await
            .expect("raw setting");
    assert_eq!(raw.as_deref(), Some(""));
    assert_eq!(user_id_without_claims(&mut connection).await, None);
}

#[tokio::test]
async fn policies_evaluate_user_id_once_per_statement() {
    let database = TestDatabase::new().await;
    let mut connection = database.authenticator().await;

    let mut transaction = begin_as(&mut connection, ALICE).await;
    let plan: Vec<String> = sqlx::query_scalar("explain select * from api.items")
        .fetch_all(&mut *transaction)
        .await
        .expect("explain");
    let plan = plan.join("\n");
    // An InitPlan runs once per statement; a per-row call would appear as
    // a function call inside the row filter instead.
    assert!(plan.contains("InitPlan"), "{plan}");
    assert!(!plan.contains("current_user_id()"), "{plan}");
}

/// Returns `(current_user, role setting, claims setting)` of a pooled
/// connection outside any transaction, plus its backend pid.
async fn connection_state(database: &Database) -> (String, String, Option<String>, i32) {
    sqlx::query_as(
        "select current_user::text, current_setting('role'), \
                current_setting('request.jwt.claims', true), pg_backend_pid()",
    )
    .fetch_one(database.pool())
    .await
    .expect("reading connection state")
}

fn assert_clean(state: &(String, String, Option<String>, i32)) {
    assert_eq!(state.0, "authenticator", "current_user after a request");
    assert_eq!(state.1, "none", "role setting after a request");
    assert!(
        state.2.as_deref().is_none_or(str::is_empty),
        "claims after a request: {:?}",
        state.2
    );
}

#[tokio::test]
async fn claims_never_leak_between_pooled_requests() {
    let test_database = TestDatabase::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&test_database.authenticator_url)
        .await
        .expect("pool of one connection");
    let database = Database::from_pool(pool);
    let alice = Identity {
        user_id: ALICE.into(),
        email: Some("alice@example.com".into()),
    };
    let bob = Identity {
        user_id: BOB.into(),
        email: None,
    };

    let first_pid = connection_state(&database).await.3;
    for round in 0..3 {
        for identity in [&alice, &bob] {
            let mut transaction = database.begin_as(identity).await.expect("begin as user");
            let user: Option<String> = sqlx::query_scalar("select api.current_user_id()")
                .fetch_one(&mut *transaction)
                .await
                .expect("current user id");
            assert_eq!(user.as_deref(), Some(identity.user_id.as_str()));
            sqlx::query("insert into api.items (title) values ($1)")
                .bind(format!("round {round}"))
                .execute(&mut *transaction)
                .await
                .expect("insert");
            transaction.commit().await.expect("commit");

            let state = connection_state(&database).await;
            assert_eq!(state.3, first_pid, "the pool must reuse its one connection");
            assert_clean(&state);
        }

        // A transaction that fails and is dropped without commit.
        let mut transaction = database.begin_as(&alice).await.expect("begin as alice");
        let error = sqlx::query("select 1 / 0")
            .execute(&mut *transaction)
            .await
            .expect_err("division by zero");
        assert_eq!(sqlstate(&error).as_deref(), Some("22012"));
        drop(transaction);

        let state = connection_state(&database).await;
        assert_eq!(state.3, first_pid, "the pool must reuse its one connection");
        assert_clean(&state);

        let mut transaction = database.begin_as(&bob).await.expect("begin as bob");
        let bob_count: i64 = sqlx::query_scalar("select count(*) from api.items")
            .fetch_one(&mut *transaction)
            .await
            .expect("count");
        assert_eq!(bob_count, round + 1, "bob sees only his own items");
        let email: Option<String> = sqlx::query_scalar(
            "select current_setting('request.jwt.claims', true)::jsonb ->> 'email'",
        )
        .fetch_one(&mut *transaction)
        .await
        .expect("email claim");
        assert_eq!(email, None, "alice's email must not reach bob's claims");
        transaction.commit().await.expect("commit");
    }

    let state = connection_state(&database).await;
    assert_clean(&state);
}
