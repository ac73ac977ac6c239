-- `anon` and `authenticated` may exist before the first migration, for
-- example on a cluster that already serves PostgREST, and 0001 keeps such a
-- role as it found it. item-api runs every request as `authenticated`, so
-- an attribute such as SUPERUSER or BYPASSRLS, or privileges inherited
-- from another role, would switch off the row-level security policies.
--
-- Each attribute that is set is cleared, one at a time, because clearing
-- LOGIN or CREATEDB needs less privilege than naming SUPERUSER, which only
-- a superuser may do. INHERIT is left alone: it matters only through
-- memberships, which are refused below. A membership is not revoked,
-- because other applications on the cluster may rely on it: the migration
-- stops and names it instead. item-api serve checks the same conditions on
-- every new connection, so a failed run of this migration does not leave
-- it serving with such a role.

do $$
declare
    role_name text;
    attribute record;
    granted_roles text;
begin
    foreach role_name in array array['anon', 'authenticated'] loop
        for attribute in
            select clause
            from pg_catalog.pg_roles r,
                 lateral (values
                     (r.rolsuper, 'nosuperuser'),
                     (r.rolbypassrls, 'nobypassrls'),
                     (r.rolreplication, 'noreplication'),
                     (r.rolcanlogin, 'nologin'),
                     (r.rolcreaterole, 'nocreaterole'),
                     (r.rolcreatedb, 'nocreatedb')
                 ) as attributes(is_set, clause)
            where r.rolname = role_name and attributes.is_set
        loop
            begin
                execute format('alter role %I %s', role_name, attribute.clause);
            exception when internal_error then
                -- "tuple concurrently updated": a migration of another
                -- database changed the same role at the same moment. Its
                -- change has committed by now, so the check after the loop
                -- decides.
                null;
            end;
        end loop;

        if exists (
            select 1 from pg_catalog.pg_roles
            where rolname = role_name
              and (rolsuper or rolbypassrls or rolreplication or rolcanlogin
                   or rolcreaterole or rolcreatedb)
        ) then
            raise exception 'role % still has an attribute that lets it bypass row-level security or log in', role_name;
        end if;

        -- From PostgreSQL 16 one membership may appear once per grantor.
        select string_agg(distinct granted.rolname, ', ')
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
