//! The read-only check `item-api migrate` runs before any migration.
//!
//! sqlx commits each migration on its own. 0001 grants `anon` and
//! `authenticated` to `authenticator`, and only 0003 clears their dangerous
//! attributes and refuses their memberships. Had 0003 failed after 0001
//! committed, `authenticator` could `SET ROLE` into a SUPERUSER or BYPASSRLS
//! role. So the conditions under which 0003 fails are checked first, from
//! the catalogs only, and the run stops before it changes anything.
//!
//! The permission rules follow PostgreSQL's `ALTER ROLE`: up to 15 a
//! non-superuser with CREATEROLE may clear LOGIN, CREATEROLE and CREATEDB
//! on a role without SUPERUSER, REPLICATION or BYPASSRLS. From 16 it also
//! needs ADMIN OPTION on the role, and may clear CREATEDB, REPLICATION and
//! BYPASSRLS only when it has them itself.
//!
//! NOTE: the rules for 16 and later come from the PostgreSQL 16 release
//! notes and `AlterRole`; the integration tests run them against 15 only.

use sqlx::postgres::PgConnection;

/// Version of the migration that corrects the request roles
/// (`sql/0003_request_role_attributes.sql`). Once it has been applied, later
/// runs no longer depend on the roles, and the check is skipped.
const REQUEST_ROLE_MIGRATION: i64 = 3;

/// Whether the request-role migration is recorded as applied. The
/// migrations table is read only when it exists, so a first run creates
/// nothing here either.
const REQUEST_ROLE_MIGRATION_APPLIED: &str = "\
    select exists (\
        select 1 from _sqlx_migrations where version = $1 and success\
    )";

/// The migrating role's own attributes and the server version, which
/// decide what it may clear.
const MIGRATOR: &str = "\
    select r.rolsuper as superuser, r.rolcreaterole as create_role, \
           r.rolcreatedb as create_db, r.rolreplication as replication, \
           r.rolbypassrls as bypass_rls, \
           pg_catalog.current_setting('server_version_num')::int as server_version \
    from pg_catalog.pg_roles r \
    where r.rolname = current_user";

/// Each existing request role: its attributes, whether the migrating role
/// has ADMIN OPTION on it, and the roles it is a member of.
const REQUEST_ROLES: &str = "\
    select r.rolname::text as name, r.rolsuper as superuser, r.rolbypassrls as bypass_rls, \
           r.rolreplication as replication, r.rolcanlogin as login, \
           r.rolcreaterole as create_role, r.rolcreatedb as create_db, \
           pg_catalog.pg_has_role(current_user, r.oid, 'member with admin option') \
               as migrator_is_admin, \
           (select pg_catalog.string_agg(distinct granted.rolname::text, ', ') \
            from pg_catalog.pg_auth_members m \
            join pg_catalog.pg_roles granted on granted.oid = m.roleid \
            where m.member = r.oid) as member_of \
    from pg_catalog.pg_roles r \
    where r.rolname in ('anon', 'authenticated') \
    order by r.rolname";

/// The roles with SUPERUSER or BYPASSRLS that an existing `authenticator`
/// has been granted, directly or through other roles, other than the
/// request roles the migration corrects. `item-api serve` refuses such a
/// login role, so `migrate` stops for it too. The grants are walked in
/// `pg_auth_members` rather than asked of `pg_has_role`, which counts every
/// role for a superuser, and `authenticator`'s own attributes are left out
/// because 0001 clears them. No row when `authenticator` does not exist.
const ESCAPING_LOGIN_ROLES: &str = "\
    with recursive granted(oid) as ( \
        select m.roleid \
        from pg_catalog.pg_auth_members m \
        join pg_catalog.pg_roles login on login.oid = m.member \
        where login.rolname = 'authenticator' \
        union \
        select m.roleid \
        from pg_catalog.pg_auth_members m \
        join granted on m.member = granted.oid \
    ) \
    select target.rolname::text \
    from granted \
    join pg_catalog.pg_roles target on target.oid = granted.oid \
    where (target.rolsuper or target.rolbypassrls) \
      and target.rolname not in ('anon', 'authenticated', 'authenticator') \
    order by target.rolname";

/// The role that runs the migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Migrator {
    /// SUPERUSER: may clear every attribute.
    pub superuser: bool,
    /// CREATEROLE: needed to alter other roles at all.
    pub create_role: bool,
    /// CREATEDB: from PostgreSQL 16, needed to clear CREATEDB.
    pub create_db: bool,
    /// REPLICATION: from PostgreSQL 16, needed to clear REPLICATION.
    pub replication: bool,
    /// BYPASSRLS: from PostgreSQL 16, needed to clear BYPASSRLS.
    pub bypass_rls: bool,
    /// `server_version_num`, such as 150018.
    pub server_version: i32,
}

/// An existing `anon` or `authenticated` role.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct RequestRole {
    /// `anon` or `authenticated`.
    pub name: String,
    /// SUPERUSER.
    pub superuser: bool,
    /// BYPASSRLS.
    pub bypass_rls: bool,
    /// REPLICATION.
    pub replication: bool,
    /// LOGIN.
    pub login: bool,
    /// CREATEROLE.
    pub create_role: bool,
    /// CREATEDB.
    pub create_db: bool,
    /// Whether the migrating role has ADMIN OPTION on this role.
    pub migrator_is_admin: bool,
    /// The roles this one is a member of, comma-separated, if any.
    pub member_of: Option<String>,
}

/// Checks the existing request roles unless the migration that corrects
/// them has already been applied.
///
/// # Errors
///
/// Returns an error naming every role that would make that migration
/// fail, and why, or the database error of a failed query.
pub async fn check(connection: &mut PgConnection) -> anyhow::Result<()> {
    let escaping: Vec<String> = sqlx::query_scalar(ESCAPING_LOGIN_ROLES)
        .fetch_all(&mut *connection)
        .await?;
    if let Some(problem) = login_role_problem(&escaping) {
        anyhow::bail!("no migration was applied: {problem}");
    }
    if request_role_migration_applied(connection).await? {
        return Ok(());
    }
    let migrator: Migrator = sqlx::query_as(MIGRATOR).fetch_one(&mut *connection).await?;
    let roles: Vec<RequestRole> = sqlx::query_as(REQUEST_ROLES)
        .fetch_all(&mut *connection)
        .await?;

    let problems: Vec<String> = roles
        .iter()
        .filter_map(|role| problem(&migrator, role))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "no migration was applied, because the existing request roles would make \
             sql/0003_request_role_attributes.sql fail: {}",
            problems.join(" ")
        )
    }
}

async fn request_role_migration_applied(connection: &mut PgConnection) -> anyhow::Result<bool> {
    let table_exists: bool =
        sqlx::query_scalar("select pg_catalog.to_regclass('_sqlx_migrations') is not null")
            .fetch_one(&mut *connection)
            .await?;
    if !table_exists {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(REQUEST_ROLE_MIGRATION_APPLIED)
        .bind(REQUEST_ROLE_MIGRATION)
        .fetch_one(&mut *connection)
        .await?)
}

/// Returns why `item-api serve` would refuse `authenticator` when it can
/// switch to the roles `escaping`, or `None` when the list is empty.
pub fn login_role_problem(escaping: &[String]) -> Option<String> {
    if escaping.is_empty() {
        return None;
    }
    let roles = escaping.join(", ");
    Some(format!(
        "role authenticator can switch to {roles}, which has SUPERUSER or BYPASSRLS, so \
         item-api serve would refuse every connection. Revoke {roles} from authenticator, \
         or clear the attribute."
    ))
}

/// Returns why the migration would fail on `role`, as a sentence, or
/// `None` when it would succeed.
pub fn problem(migrator: &Migrator, role: &RequestRole) -> Option<String> {
    let name = &role.name;
    if let Some(granted) = &role.member_of {
        // The same sentence 0003 raises, so both runs name the remedy alike.
        return Some(format!(
            "Role {name} is a member of {granted}, so requests run as it could use privileges \
             that the row-level security policies do not limit. Revoke those roles from \
             {name}, then run the migration again."
        ));
    }
    if migrator.superuser {
        return None;
    }

    let set: Vec<&str> = [
        (role.superuser, "SUPERUSER"),
        (role.bypass_rls, "BYPASSRLS"),
        (role.replication, "REPLICATION"),
        (role.login, "LOGIN"),
        (role.create_role, "CREATEROLE"),
        (role.create_db, "CREATEDB"),
    ]
    .into_iter()
    .filter_map(|(is_set, attribute)| is_set.then_some(attribute))
    .collect();
    if set.is_empty() {
        return None;
    }
    let attributes = set.join(", ");

    let needs_superuser = role.superuser
        || (migrator.server_version < 160_000 && (role.bypass_rls || role.replication));
    if needs_superuser {
        return Some(format!(
            "Role {name} has {attributes}, which only a superuser may clear. Run the \
             migration as a superuser, or clear them first."
        ));
    }
    if !migrator.create_role || (migrator.server_version >= 160_000 && !role.migrator_is_admin) {
        return Some(format!(
            "Role {name} has {attributes}, which only a role with CREATEROLE (and, from \
             PostgreSQL 16, ADMIN OPTION on {name}) may clear. Run the migration as such a \
             role or a superuser, or clear them first."
        ));
    }
    if migrator.server_version < 160_000 {
        return None;
    }
    // From 16, CREATEROLE and ADMIN OPTION clear CREATEDB, REPLICATION and
    // BYPASSRLS only for a role that has them itself.
    let own_missing: Vec<&str> = [
        (role.create_db && !migrator.create_db, "CREATEDB"),
        (role.replication && !migrator.replication, "REPLICATION"),
        (role.bypass_rls && !migrator.bypass_rls, "BYPASSRLS"),
    ]
    .into_iter()
    .filter_map(|(missing, attribute)| missing.then_some(attribute))
    .collect();
    if own_missing.is_empty() {
        None
    } else {
        let missing = own_missing.join(", ");
        Some(format!(
            "Role {name} has {missing}, which the migrating role may clear only if it has \
             them itself. Run the migration as a superuser, or clear them first."
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTGRES_15: i32 = 150_018;
    const POSTGRES_16: i32 = 160_004;

    fn creator(server_version: i32) -> Migrator {
        Migrator {
            create_role: true,
            server_version,
            ..Migrator::default()
        }
    }

    fn role(name: &str) -> RequestRole {
        RequestRole {
            name: name.into(),
            ..RequestRole::default()
        }
    }

    #[test]
    fn escaping_login_role_is_named() {
        assert_eq!(login_role_problem(&[]), None);
        let problem = login_role_problem(&["service_role".to_owned()]).expect("an escaping role");
        assert!(
            problem.contains("role authenticator can switch to service_role"),
            "{problem}"
        );
    }

    #[test]
    fn safe_role_passes_for_anyone() {
        assert_eq!(problem(&Migrator::default(), &role("anon")), None);
    }

    #[test]
    fn membership_stops_even_a_superuser() {
        let migrator = Migrator {
            superuser: true,
            ..Migrator::default()
        };
        let member = RequestRole {
            member_of: Some("other_app".into()),
            ..role("authenticated")
        };
        let problem = problem(&migrator, &member).expect("a membership is refused");
        assert!(
            problem.contains("Role authenticated is a member of other_app"),
            "{problem}"
        );
    }

    #[test]
    fn superuser_clears_every_attribute() {
        let migrator = Migrator {
            superuser: true,
            ..Migrator::default()
        };
        let unsafe_role = RequestRole {
            superuser: true,
            bypass_rls: true,
            login: true,
            ..role("anon")
        };
        assert_eq!(problem(&migrator, &unsafe_role), None);
    }

    #[test]
    fn bypassrls_needs_a_superuser_before_16() {
        let bypassing = RequestRole {
            bypass_rls: true,
            ..role("anon")
        };
        let problem = problem(&creator(POSTGRES_15), &bypassing).expect("refused");
        assert!(problem.contains("only a superuser"), "{problem}");
    }

    #[test]
    fn login_needs_createrole_before_16() {
        let login = RequestRole {
            login: true,
            create_db: true,
            ..role("authenticated")
        };
        assert_eq!(problem(&creator(POSTGRES_15), &login), None);
        let problem = problem(&Migrator::default(), &login).expect("refused");
        assert!(problem.contains("CREATEROLE"), "{problem}");
    }

    #[test]
    fn postgres_16_needs_admin_and_own_attributes() {
        let login = RequestRole {
            login: true,
            create_db: true,
            ..role("authenticated")
        };
        let without_admin = problem(&creator(POSTGRES_16), &login).expect("refused");
        assert!(without_admin.contains("ADMIN OPTION"), "{without_admin}");

        let admin = RequestRole {
            migrator_is_admin: true,
            ..login
        };
        let without_createdb = problem(&creator(POSTGRES_16), &admin).expect("refused");
        assert!(without_createdb.contains("CREATEDB"), "{without_createdb}");

        let migrator = Migrator {
            create_db: true,
            ..creator(POSTGRES_16)
        };
        assert_eq!(problem(&migrator, &admin), None);
    }
}
