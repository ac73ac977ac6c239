-- `anon` and `authenticated` may exist before the first migration, for
-- example on a cluster that already serves PostgREST, and 0001 keeps such a
-- role as it found it. item-api runs every request as `authenticated`, so
-- an attribute such as SUPERUSER or BYPASSRLS, or privileges inherited
-- from another role, would switch off the row-level security policies.
--
-- The attributes are corrected, as 0001 does for `authenticator`. A
-- membership in another role is not revoked, because other applications
-- on the cluster may rely on it: the migration stops and names it instead.

do $$
declare
    role_name text;
    granted_roles text;
begin
    foreach role_name in array array['anon', 'authenticated'] loop
        -- The check first avoids a needless ALTER, which could collide with
        -- a concurrent migration of another database updating the same row.
        if exists (
            select 1 from pg_catalog.pg_roles
            where rolname = role_name
              and (rolsuper or rolbypassrls or rolinherit or rolcanlogin
                   or rolcreaterole or rolcreatedb or rolreplication)
        ) then
            execute format(
                'alter role %I nologin noinherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls',
                role_name
            );
        end if;

        select string_agg(granted.rolname, ', ' order by granted.rolname)
        into granted_roles
        from pg_catalog.pg_auth_members m
        join pg_catalog.pg_roles granted on granted.oid = m.roleid
        join pg_catalog.pg_roles member on member.oid = m.member
        where member.rolname = role_name;

        if granted_roles is not null then
            -- sqlx shows the message only, so it carries the remedy too.
            raise exception 'role % is a member of %, so requests run as it could use privileges that the row-level security policies do not limit. Revoke those roles from %, then run the migration again',
                role_name, granted_roles, role_name;
        end if;
    end loop;
end
$$;
