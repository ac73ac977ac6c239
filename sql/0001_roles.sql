-- Roles used by item-api. Roles are cluster-wide while migrations run per
-- database, so every statement here tolerates the role already existing and
-- a concurrent migration of another database creating it at the same moment
-- (which surfaces as duplicate_object or unique_violation).
--
-- No password is set here: operators give `authenticator` one (or another
-- authentication method) outside the migrations.

do $$
declare
    role_name text;
begin
    -- The role item-api logs in as. Because of NOINHERIT it has no table
    -- privileges until it runs `set role authenticated`.
    begin
        create role authenticator login noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
    exception when duplicate_object or unique_violation then
        null;
    end;

    -- A pre-existing role with dangerous attributes is corrected, not trusted.
    -- The check first avoids a needless ALTER, which could collide with a
    -- concurrent migration updating the same catalog row.
    if exists (
        select 1 from pg_catalog.pg_roles
        where rolname = 'authenticator'
          and (rolsuper or rolbypassrls or rolinherit or not rolcanlogin or rolcreaterole or rolcreatedb)
    ) then
        alter role authenticator login noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
    end if;

    foreach role_name in array array['anon', 'authenticated'] loop
        begin
            execute format('create role %I nologin noinherit nosuperuser nobypassrls', role_name);
        exception when duplicate_object or unique_violation then
            null;
        end;

        if not exists (
            select 1
            from pg_catalog.pg_auth_members m
            join pg_catalog.pg_roles granted on granted.oid = m.roleid
            join pg_catalog.pg_roles member on member.oid = m.member
            where granted.rolname = role_name and member.rolname = 'authenticator'
        ) then
            begin
                execute format('grant %I to authenticator', role_name);
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
    end loop;
end
$$;
