-- The items table behind item-api, guarded by row-level security so that
-- the database, not the handlers, decides which rows a user may see or
-- change. The migrating role owns every object here; `authenticator` owns
-- nothing and has no privileges of its own.

create schema api;
grant usage on schema api to authenticated;

-- The caller's user id: the `sub` claim of the transaction-local setting
-- `request.jwt.claims`. NULL when the setting is unset, empty (as it reads
-- after the transaction that set it has ended) or has no `sub`.
create function api.current_user_id() returns text
    language sql
    stable
as $$
    select nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', '')
$$;

-- Users who may read, update and delete every item. Only the migrating role
-- (or another administrator) edits this table.
create table api.superusers (
    user_id text primary key
        constraint superusers_user_id_length check (char_length(user_id) between 1 and 255)
);

-- SECURITY DEFINER so `authenticated` can ask without any privilege on
-- api.superusers; the empty search_path keeps a caller's objects from
-- shadowing the ones named here.
create function api.is_superuser() returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select exists (
        select 1 from api.superusers where user_id = api.current_user_id()
    )
$$;
revoke execute on function api.is_superuser() from public;
grant execute on function api.is_superuser() to authenticated;

create table api.items (
    id bigint generated always as identity primary key,
    title text not null
        constraint items_title_length check (char_length(title) between 1 and 255),
    description text
        constraint items_description_length check (char_length(description) <= 10000),
    owner_id text not null default api.current_user_id()
        constraint items_owner_id_length check (char_length(owner_id) between 1 and 255),
    created_at timestamptz not null default now()
);

-- Serves "this owner's items ordered by id", the list query.
create index items_owner_id_id_idx on api.items (owner_id, id);

-- FORCE makes the policies apply to the table owner as well (superusers and
-- BYPASSRLS roles still bypass them, which is why authenticator is neither).
alter table api.items enable row level security;
alter table api.items force row level security;

-- owner_id is neither insertable nor updatable by clients: it comes from the
-- column default, and the insert policy checks it anyway.
grant select, delete on api.items to authenticated;
grant insert (title, description) on api.items to authenticated;
grant update (title, description) on api.items to authenticated;

-- `(select f())` makes the planner evaluate each function once per
-- statement as an init plan instead of once per row.
create policy items_select on api.items
    for select to authenticated
    using (owner_id = (select api.current_user_id()) or (select api.is_superuser()));

create policy items_insert on api.items
    for insert to authenticated
    with check (owner_id = (select api.current_user_id()));

create policy items_update on api.items
    for update to authenticated
    using (owner_id = (select api.current_user_id()) or (select api.is_superuser()))
    with check (owner_id = (select api.current_user_id()) or (select api.is_superuser()));

create policy items_delete on api.items
    for delete to authenticated
    using (owner_id = (select api.current_user_id()) or (select api.is_superuser()));
