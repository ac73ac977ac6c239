//! item-api as operators run it. Migrations run repeatedly, concurrently
//! and on a cluster whose request roles already exist. The tests also cover
//! readiness while the database is down, connections PostgreSQL rejects,
//! roles changed under a running item-api, statements stuck behind a lock,
//! a pool of one connection shared by alternating users, and the request id
//! in the access log.

use hanko_edge_tests::edge_proxy::poll_until;
use hanko_edge_tests::item_api::{ItemApi, ItemApiOptions, http_client};
use hanko_edge_tests::pg::{PgCluster, TestDatabase, assert_migrate_succeeded, run_migrate};
use hanko_edge_tests::process::{ChildProcess, binary_path};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use sqlx::Connection as _;

const ALICE: &str = "alice-0001";
const BOB: &str = "bob-0002";

/// Number of migration files in sql/, which `_sqlx_migrations` must list.
fn migration_count() -> i64 {
    let sql_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let count = std::fs::read_dir(&sql_dir)
        .expect("sql/ exists")
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "sql"))
        .count();
    i64::try_from(count).expect("a small count")
}

async fn applied_migrations(database: &TestDatabase) -> i64 {
    let mut admin = database.admin().await;
    sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&mut admin)
        .await
        .expect("_sqlx_migrations exists")
}

#[tokio::test]
async fn migrate_twice_is_idempotent() {
    let database = PgCluster::shared().create_database().await;

    for run in 1..=2 {
        let output = run_migrate(&database.admin_url).await;
        assert_migrate_succeeded(&output);
        assert_eq!(
            applied_migrations(&database).await,
            migration_count(),
            "after run {run}"
        );
    }

    // The documented form, with the shared config file, works as well.
    let shipped_config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let output = tokio::process::Command::new(binary_path("item-api"))
        .arg("migrate")
        .arg("--config")
        .arg(&shipped_config)
        .arg("--database-url")
        .arg(&database.admin_url)
        .output()
        .await
        .expect("starting item-api migrate");
    assert_migrate_succeeded(&output);
    assert_eq!(applied_migrations(&database).await, migration_count());

    let mut admin = database.admin().await;
    let table: Option<String> = sqlx::query_scalar("select to_regclass('api.items')::text")
        .fetch_one(&mut admin)
        .await
        .expect("regclass query");
    assert_eq!(table.as_deref(), Some("api.items"));
}

#[tokio::test]
async fn concurrent_migrations_create_roles_once() {
    // A private cluster, so the roles do not exist yet and four migrations
    // race to create them.
    let cluster = PgCluster::start();
    let mut databases = Vec::new();
    for _ in 0..4 {
        databases.push(cluster.create_database().await);
    }

    let mut runs = tokio::task::JoinSet::new();
    for database in &databases {
        let url = database.admin_url.clone();
        runs.spawn(async move { run_migrate(&url).await });
    }
    let outputs = runs.join_all().await;
    for output in &outputs {
        assert_migrate_succeeded(output);
    }

    for database in &databases {
        assert_eq!(applied_migrations(database).await, migration_count());
    }
    let mut admin = databases[0].admin().await;
    let roles: i64 = sqlx::query_scalar(
        "select count(*) from pg_roles where rolname in ('authenticator', 'anon', 'authenticated')",
    )
    .fetch_one(&mut admin)
    .await
    .expect("roles query");
    assert_eq!(roles, 3);
}

#[tokio::test]
async fn migration_corrects_existing_request_roles() {
    // A private cluster, so the roles can exist with unsafe attributes
    // before the first migration, as on a cluster shared with other tools.
    let cluster = PgCluster::start();
    let database = cluster.create_database().await;
    let mut admin = database.admin().await;
    execute_all(
        &mut admin,
        &[
            // PostgREST's login role has the same name as item-api's.
            "create role authenticator login noinherit",
            "create role other_app nologin",
            "create role authenticated login inherit bypassrls createdb",
            "create role anon superuser nologin",
            "grant other_app to authenticated",
        ],
    )
    .await;

    let output = run_migrate(&database.admin_url).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a member of other_app was accepted:\n{stderr}"
    );

    // The run stopped before the first migration, which grants anon and
    // authenticated to authenticator: authenticator must not be able to
    // switch to a role that escapes row-level security.
    let reachable: Vec<String> = sqlx::query_scalar(
        "select target.rolname::text \
         from pg_roles login \
         join pg_roles target on pg_has_role(login.oid, target.oid, 'member') \
         where login.rolname = 'authenticator' \
           and (target.rolsuper or target.rolbypassrls) \
         order by 1",
    )
    .fetch_all(&mut admin)
    .await
    .expect("reachable roles query");
    assert!(
        reachable.is_empty(),
        "authenticator can switch to {reachable:?}"
    );
    assert!(!has_migrations_table(&mut admin).await, "a migration ran");
    assert!(
        stderr.contains("Role authenticated is a member of other_app"),
        "{stderr}"
    );
    assert!(stderr.contains("no migration was applied"), "{stderr}");

    // The role still has BYPASSRLS, and item-api refuses to serve requests
    // as it.
    let mut api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            acquire_timeout_ms: Some(500),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let client = http_client();
    let list = || {
        client
            .get(api.url("/api/v1/item/"))
            .header("X-User-Id", ALICE)
            .send()
    };
    let response = list().await.expect("list");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = api.log();
    assert!(
        log.contains(
            "refusing the connection: role authenticated has the SUPERUSER or BYPASSRLS attribute"
        ),
        "{log}"
    );

    sqlx::query("revoke other_app from authenticated")
        .execute(&mut admin)
        .await
        .expect("revoke");
    assert_migrate_succeeded(&run_migrate(&database.admin_url).await);
    assert_eq!(applied_migrations(&database).await, migration_count());
    let response = list().await.expect("list");
    assert_eq!(response.status(), StatusCode::OK);
    api.process().signal("TERM");

    let unsafe_roles: Vec<String> = sqlx::query_scalar(
        "select rolname::text from pg_roles \
         where rolname in ('anon', 'authenticated') \
           and (rolsuper or rolbypassrls or rolcanlogin or rolcreatedb \
                or rolcreaterole or rolreplication) \
         order by rolname",
    )
    .fetch_all(&mut admin)
    .await
    .expect("role query");
    assert!(unsafe_roles.is_empty(), "{unsafe_roles:?}");
}

#[tokio::test]
async fn migrate_stops_for_escaping_login_role() {
    // A PostgREST-style cluster whose authenticator can switch, through a
    // role in between, to a role that bypasses row-level security, which
    // item-api serve refuses.
    let cluster = PgCluster::start();
    let database = cluster.create_database().await;
    let mut admin = database.admin().await;
    execute_all(
        &mut admin,
        &[
            "create role authenticator login noinherit",
            "create role web_roles nologin",
            "create role service_role nologin bypassrls",
            "grant web_roles to authenticator",
            "grant service_role to web_roles",
        ],
    )
    .await;

    let output = run_migrate(&database.admin_url).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "migrate passed:\n{stderr}");
    assert!(
        stderr.contains("role authenticator can switch to service_role"),
        "{stderr}"
    );
    assert!(!has_migrations_table(&mut admin).await, "a migration ran");

    sqlx::query("revoke service_role from web_roles")
        .execute(&mut admin)
        .await
        .expect("revoke");
    assert_migrate_succeeded(&run_migrate(&database.admin_url).await);
}

#[tokio::test]
async fn migrate_corrects_an_unsafe_authenticator() {
    // authenticator's own attributes are the first migration's to clear,
    // so the check before it must let the run start.
    let cluster = PgCluster::start();
    let database = cluster.create_database().await;
    let mut admin = database.admin().await;
    execute_all(
        &mut admin,
        &["create role authenticator login superuser bypassrls"],
    )
    .await;

    assert_migrate_succeeded(&run_migrate(&database.admin_url).await);

    let unsafe_attributes: bool = sqlx::query_scalar(
        "select rolsuper or rolbypassrls from pg_roles where rolname = 'authenticator'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("role query");
    assert!(
        !unsafe_attributes,
        "authenticator kept SUPERUSER or BYPASSRLS"
    );
}

#[tokio::test]
async fn serve_refuses_reachable_bypassrls_role() {
    // A private cluster, because the change to anon is cluster-wide.
    let cluster = PgCluster::start();
    let database = cluster.create_migrated_database().await;
    let mut admin = database.admin().await;
    // authenticated stays safe; authenticator can still SET ROLE anon.
    sqlx::query("alter role anon bypassrls")
        .execute(&mut admin)
        .await
        .expect("alter anon");

    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            acquire_timeout_ms: Some(500),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let response = http_client()
        .get(api.url("/api/v1/item/"))
        .header("X-User-Id", ALICE)
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let log = api.log();
    assert!(
        log.contains(
            "refusing the connection: role authenticator can switch to role anon, \
             which has the SUPERUSER or BYPASSRLS attribute"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn non_superuser_migration_clears_what_it_may() {
    // The README requires only a role that may create roles and tables.
    let cluster = PgCluster::start();
    let database = cluster.create_database().await;
    let mut admin = database.admin().await;
    execute_all(
        &mut admin,
        &[
            "create role migrator login createrole",
            "create role authenticated login createdb",
            // PostgreSQL 16 and later let a CREATEROLE role change only the
            // roles it administers.
            "grant authenticated to migrator with admin option",
            "do $$ begin \
                 execute format('alter database %I owner to migrator', current_database()); \
             end $$",
            "create database second_database owner migrator",
        ],
    )
    .await;

    let migrator_url = database
        .admin_url
        .replacen("://postgres@", "://migrator@", 1);
    assert_migrate_succeeded(&run_migrate(&migrator_url).await);
    let (can_login, can_create_databases): (bool, bool) = sqlx::query_as(
        "select rolcanlogin, rolcreatedb from pg_roles where rolname = 'authenticated'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("role query");
    assert!(!can_login, "authenticated can still log in");
    assert!(
        !can_create_databases,
        "authenticated can still create databases"
    );

    // Clearing BYPASSRLS needs a superuser, so the migration stops.
    sqlx::query("alter role anon bypassrls")
        .execute(&mut admin)
        .await
        .expect("alter anon");
    let output = run_migrate(&cluster.url("migrator", "second_database")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "BYPASSRLS was kept:\n{stderr}");
    // PostgreSQL 15 names the superuser in the message. From 16 the message
    // is "permission denied to alter role" and the detail, which sqlx does
    // not show, names it (AlterRole in src/backend/commands/user.c).
    assert!(
        stderr.contains("superuser") || stderr.contains("permission denied"),
        "{stderr}"
    );
    let mut second = sqlx::PgConnection::connect(&cluster.url("postgres", "second_database"))
        .await
        .expect("connecting to second_database");
    assert!(
        !has_migrations_table(&mut second).await,
        "a migration ran before the refusal"
    );
}

#[tokio::test]
async fn readyz_is_503_while_database_is_down() {
    let cluster = PgCluster::start();
    let database = cluster.create_migrated_database().await;
    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            acquire_timeout_ms: Some(1_000),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let client = http_client();

    let response = client.get(api.url("/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), StatusCode::OK);

    cluster.stop();

    let response = client.get(api.url("/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");

    let response = client
        .get(api.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), StatusCode::OK);

    let response = client
        .get(api.url("/api/v1/item/"))
        .header("X-User-Id", ALICE)
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("problem JSON");
    let detail = body["detail"].as_str().expect("detail");
    assert!(!detail.contains("Connection refused"), "{detail}");
    assert!(!detail.contains("127.0.0.1"), "{detail}");
}

#[tokio::test]
async fn rejected_connection_gets_503() {
    // A private cluster, because the password rule is cluster-wide.
    let cluster = PgCluster::start();
    let database = cluster.create_migrated_database().await;
    let mut admin = database.admin().await;
    sqlx::query("alter role authenticator password 'right-password'")
        .execute(&mut admin)
        .await
        .expect("setting the password");
    cluster.require_password("authenticator");
    // pg_ctl reload only signals the server; wait until the rule applies.
    let applied = poll_until(std::time::Duration::from_secs(10), || async {
        sqlx::PgConnection::connect(&database.authenticator_url)
            .await
            .is_err()
    })
    .await;
    assert!(applied, "the password rule never applied");

    let cases = [
        (
            "wrong password (28P01)",
            cluster.url("authenticator:wrong-password", &database.name),
        ),
        (
            "missing database (3D000)",
            cluster.url("authenticator:right-password", "no_such_database"),
        ),
    ];
    for (case, url) in cases {
        let target = TestDatabase {
            authenticator_url: url,
            ..database.clone()
        };
        let api = ItemApi::spawn_with(
            &target,
            ItemApiOptions {
                acquire_timeout_ms: Some(1_000),
                ..ItemApiOptions::default()
            },
        )
        .await;
        let response = http_client()
            .get(api.url("/api/v1/item/"))
            .header("X-User-Id", ALICE)
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{case}");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/problem+json",
            "{case}"
        );
        let body: Value = response.json().await.expect("problem JSON");
        assert_eq!(
            body["detail"], "The database is unavailable; retry the request later.",
            "{case}"
        );
    }

    // The right password works, so the cases above failed for their reason.
    let target = TestDatabase {
        authenticator_url: cluster.url("authenticator:right-password", &database.name),
        ..database.clone()
    };
    let api = ItemApi::spawn(&target).await;
    let response = http_client()
        .get(api.url("/api/v1/item/"))
        .header("X-User-Id", ALICE)
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn database_not_in_utf8_gets_503() {
    // The shared cluster's roles exist once one database is migrated.
    let migrated = TestDatabase::new().await;
    let cluster = PgCluster::shared();
    let name = format!("{}_sql_ascii", migrated.name);
    let mut admin = migrated.admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create database {name} encoding 'SQL_ASCII' template template0"
    )))
    .execute(&mut admin)
    .await
    .expect("creating a SQL_ASCII database");
    let database = TestDatabase {
        admin_url: cluster.url("postgres", &name),
        authenticator_url: cluster.url("authenticator", &name),
        name,
        ..migrated.clone()
    };
    assert_migrate_succeeded(&run_migrate(&database.admin_url).await);

    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            acquire_timeout_ms: Some(500),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let response = http_client()
        .get(api.url("/api/v1/item/"))
        .header("X-User-Id", ALICE)
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let log = api.log();
    assert!(
        log.contains("has the encoding SQL_ASCII, but item-api needs UTF8"),
        "{log}"
    );
}

#[tokio::test]
async fn locked_table_times_out_with_503() {
    let database = TestDatabase::new().await;
    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            statement_timeout_ms: Some(300),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let client = http_client();
    let items_url = api.url("/api/v1/item/");

    // An open transaction holding the table's strongest lock blocks every
    // statement item-api sends until statement_timeout cancels it.
    let mut admin = database.admin().await;
    sqlx::query("begin")
        .execute(&mut admin)
        .await
        .expect("begin");
    sqlx::query("lock table api.items in access exclusive mode")
        .execute(&mut admin)
        .await
        .expect("lock");

    for request in [
        client.get(&items_url),
        client.post(&items_url).json(&json!({"title": "blocked"})),
    ] {
        let response = request
            .header("X-User-Id", ALICE)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let body: Value = response.json().await.expect("problem JSON");
        let detail = body["detail"].as_str().expect("detail");
        assert!(
            detail.contains("did not finish the request in time"),
            "{detail}"
        );
        assert!(!detail.contains("canceling"), "{detail}");
    }

    sqlx::query("rollback")
        .execute(&mut admin)
        .await
        .expect("rollback");
    let items: Vec<Value> = client
        .get(&items_url)
        .header("X-User-Id", ALICE)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list JSON");
    assert!(items.is_empty(), "the cancelled create left {items:?}");
}

#[tokio::test]
async fn pool_of_one_serves_alternating_users() {
    let database = TestDatabase::new().await;
    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            max_connections: Some(1),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let client = http_client();
    let items_url = api.url("/api/v1/item/");

    for round in 1..=3 {
        for user in [ALICE, BOB] {
            let response = client
                .post(&items_url)
                .header("X-User-Id", user)
                .json(&json!({"title": format!("{user} {round}")}))
                .send()
                .await
                .expect("create");
            assert_eq!(response.status(), StatusCode::CREATED);

            // A request that fails validation between two users' requests.
            let response = client
                .post(&items_url)
                .header("X-User-Id", user)
                .json(&json!({"title": ""}))
                .send()
                .await
                .expect("invalid create");
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

            let items: Vec<Value> = client
                .get(&items_url)
                .header("X-User-Id", user)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("list JSON");
            assert_eq!(items.len(), round, "{user} in round {round}");
            assert!(
                items.iter().all(|item| item["owner_id"] == user),
                "{user} sees {items:?}"
            );
        }
    }

    // The one pooled connection must go back to the pool with no
    // transaction left open. sqlx ends the transaction in a background
    // task after the response, so the state is polled.
    let admin = tokio::sync::Mutex::new(database.admin().await);
    let states = || async {
        let states: Vec<Option<String>> = sqlx::query_scalar(
            "select state from pg_stat_activity \
             where datname = current_database() and application_name = 'item-api'",
        )
        .fetch_all(&mut *admin.lock().await)
        .await
        .expect("pg_stat_activity");
        states
    };
    let idle = poll_until(std::time::Duration::from_secs(5), || async {
        states().await == [Some("idle".to_owned())]
    })
    .await;
    assert!(idle, "item-api's connections: {:?}", states().await);
}

/// Runs each statement on `connection`, panicking with the failed one.
async fn execute_all(connection: &mut sqlx::PgConnection, statements: &[&'static str]) {
    for &statement in statements {
        sqlx::query(statement)
            .execute(&mut *connection)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// Reports whether sqlx's migrations table exists, so whether any
/// migration ran.
async fn has_migrations_table(connection: &mut sqlx::PgConnection) -> bool {
    let table: Option<String> = sqlx::query_scalar("select to_regclass('_sqlx_migrations')::text")
        .fetch_one(connection)
        .await
        .expect("regclass query");
    table.is_some()
}

/// Returns the backend pids of item-api's connections to `database`.
async fn item_api_backends(database: &TestDatabase) -> Vec<i32> {
    let mut admin = database.admin().await;
    sqlx::query_scalar(
        "select pid from pg_stat_activity \
         where datname = current_database() and application_name = 'item-api' \
         order by pid",
    )
    .fetch_all(&mut admin)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn bypassrls_on_pooled_connection_gets_503() {
    // A private cluster, because the change to authenticated is cluster-wide.
    let cluster = PgCluster::start();
    let database = cluster.create_migrated_database().await;
    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            max_connections: Some(1),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let client = http_client();

    let created: Value = client
        .post(api.url("/api/v1/item/"))
        .header("X-User-Id", ALICE)
        .json(&json!({"title": "alice's"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("item JSON");
    let alice_item = api.url(&format!("/api/v1/item/{}", created["id"]));
    // A list, not a get: with PostgreSQL 15, a get prepared on the
    // connection before the change kept its row-level security plan after
    // it, which hid the bypass below even without the check.
    let items: Vec<Value> = client
        .get(api.url("/api/v1/item/"))
        .header("X-User-Id", BOB)
        .send()
        .await
        .expect("list as bob")
        .json()
        .await
        .expect("list JSON");
    assert!(items.is_empty(), "bob sees {items:?}");
    let backends = item_api_backends(&database).await;
    assert_eq!(backends.len(), 1, "{backends:?}");

    // The pooled connection was checked when it opened; the role changes
    // under it.
    let mut admin = database.admin().await;
    sqlx::query("alter role authenticated bypassrls")
        .execute(&mut admin)
        .await
        .expect("alter authenticated");

    let response = client
        .get(&alice_item)
        .header("X-User-Id", BOB)
        .send()
        .await
        .expect("get as bob");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let body: Value = response.json().await.expect("problem JSON");
    let detail = body["detail"].as_str().expect("detail");
    assert!(!detail.contains("BYPASSRLS"), "{detail}");
    assert_eq!(
        item_api_backends(&database).await,
        backends,
        "the request must have used the same pooled connection"
    );
    let log = api.log();
    assert!(
        log.contains("row-level security does not apply to api.items"),
        "{log}"
    );
}

#[tokio::test]
async fn access_log_carries_request_id() {
    let database = TestDatabase::new().await;
    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            global_args: vec!["--log-format".into(), "json".into()],
            ..ItemApiOptions::default()
        },
    )
    .await;
    let client = http_client();

    let response = client
        .get(api.url("/api/v1/item/"))
        .header("X-User-Id", ALICE)
        .header("X-Request-Id", "req-4711-abc")
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-4711-abc");

    let response = client
        .get(api.url("/api/v1/item/"))
        .send()
        .await
        .expect("list without user");
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    // The log is written as the response is sent; poll briefly for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let access_line = loop {
        let log = api.log();
        let found = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["request_id"] == "req-4711-abc" && line["status"] == 200);
        if let Some(line) = found {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no JSON access line with the request id in:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(access_line["method"], "GET");
    assert_eq!(access_line["path"], "/api/v1/item/");
    assert_eq!(access_line["user"], ALICE);
    assert!(access_line["duration_ms"].is_number(), "{access_line}");
}

#[tokio::test]
async fn serve_rejects_invalid_config() {
    let directory = tempfile::tempdir().expect("temp dir");
    let config = directory.path().join("config.toml");
    std::fs::write(
        &config,
        "[backend]\n\
         database_url = \"postgres://authenticator@127.0.0.1:1/none\"\n\
         max_connections = 0\n",
    )
    .expect("writing config");

    let mut command = std::process::Command::new(binary_path("item-api"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("DATABASE_URL");
    // A child the test owns, so a regression that makes it serve is
    // killed after the timeout instead of hanging the run.
    let mut process = ChildProcess::spawn("item-api", command);
    let status = process.wait_exit(std::time::Duration::from_secs(10)).await;

    let status = status.unwrap_or_else(|| process.fail("served with an invalid config"));
    let log = process.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("backend.max_connections"), "{log}");
    assert!(log.contains(&config.display().to_string()), "{log}");
}

#[tokio::test]
async fn sigterm_stops_serve_with_status_0() {
    let database = TestDatabase::new().await;
    let mut api = ItemApi::spawn(&database).await;

    api.process().signal("TERM");
    let status = api
        .process()
        .wait_exit(std::time::Duration::from_secs(10))
        .await
        .expect("item-api must exit after SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", api.log());
    assert!(api.log().contains("item-api stopped"), "{}", api.log());
}
