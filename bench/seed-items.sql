-- Fills api.items for the whole-path benchmark in bench/run, replacing what
-- was there. Run as a superuser (which bypasses row-level security) with
-- psql variables:
--   users            number of distinct owners, the list user included
--   items            total rows
--   list_user        owner id of the user whose list the bench reads
--   list_user_items  rows owned by list_user
-- list_user gets the same number of rows whatever the table size, spread
-- evenly through the heap, so a list request reads the same rows from a
-- small or a large table and only the table size differs. The other rows
-- go round-robin to users - 1 owners whose ids are UUIDs derived from md5.

\set ON_ERROR_STOP on

truncate api.items restart identity;

insert into api.items (title, description, owner_id)
select
    'bench item ' || i,
    'seeded by bench/run',
    case
        when i % (:items / :list_user_items) = 0 and i / (:items / :list_user_items) <= :list_user_items
            then :'list_user'
        else md5('bench-user-' || (i % (:users - 1)))::uuid::text
    end
from generate_series(1, :items) as i;

vacuum analyze api.items;

select
    count(*) as items,
    count(distinct owner_id) as owners,
    count(*) filter (where owner_id = :'list_user') as list_user_items
from api.items;
