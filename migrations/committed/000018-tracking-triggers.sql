--! Previous: sha1:6540f43d897f074a51b5db4af7d1a39e7b8c21c1
--! Hash: sha1:880bbda5d46d2f8c16e09ec0cd7a48fab49b3ced
--! Message: tracking-triggers

-- Tracking triggers, second version: cheaper per statement, and no write ever fails because of
-- its tags.
--
-- * The trigger enqueues in its own statement instead of calling steward.enqueue_invalidations:
--   that call was a second security-definer function (a second search_path switch, a second
--   plpgsql frame) in every tracked write, 5 to 10 % of a tracked single-row update's time.
-- * For statements of a few rows, the fixed tags and the filled templates come from one query.
-- * A placeholder value can make a tag longer than the queue's 1000 characters. The first
--   version let the queue's check constraint fail the user's write; now such a tag becomes a
--   dead letter (permanent, with the reason) and the write and its other tags go through.

create or replace function steward.invalidate_from_statement()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  static_tags text[] := tg_argv[0]::text[];
  templates jsonb;
  reads text;
  tag_query text;
  row_tags text[];
  any_rows boolean;
  tags text[];
begin
  -- Written by track_table: tg_argv[0] the fixed tags; when a tag has placeholders, tg_argv[1]
  -- the templates and tg_argv[2] the transition tables this trigger has ('new', 'old', or
  -- 'old and new').
  if tg_nargs = 1 then
    -- Fixed tags only: the trigger captures no rows (that would cost more than all the rest),
    -- so it cannot tell a statement that changed no row, and enqueues them anyway.
    tags := static_tags;
  else
    templates := tg_argv[1]::jsonb;
    reads := tg_argv[2];
    -- A few rows (most statements): the fixed tags and the templates filled row by row, in a
    -- statement planned once per table; no row changed gives no tag. Many rows: the query
    -- track_table wrote for the event takes the distinct column values first (a 100,000-row
    -- statement touching 10 providers builds 10 strings). (Each statement names only the
    -- transition tables this trigger has: one naming another could not even be planned.)
    if reads = 'new' then
      if not exists (select from new_rows offset 16) then
        select pg_catalog.array_agg(distinct t.tag) into tags
          from new_rows as r
         cross join lateral (
           select s.tag from pg_catalog.unnest(static_tags) as s(tag)
            union all
           select f.tag from steward.fill_templates(templates, pg_catalog.to_jsonb(r)) as f(tag)) as t;
        reads := null;
      end if;
    elsif reads = 'old' then
      if not exists (select from old_rows offset 16) then
        select pg_catalog.array_agg(distinct t.tag) into tags
          from old_rows as r
         cross join lateral (
           select s.tag from pg_catalog.unnest(static_tags) as s(tag)
            union all
           select f.tag from steward.fill_templates(templates, pg_catalog.to_jsonb(r)) as f(tag)) as t;
        reads := null;
      end if;
    elsif not exists (select from new_rows offset 16) then
      select pg_catalog.array_agg(distinct t.tag) into tags
        from (select pg_catalog.to_jsonb(o) as row_values from old_rows as o
              union all
              select pg_catalog.to_jsonb(n) from new_rows as n) as r
       cross join lateral (
         select s.tag from pg_catalog.unnest(static_tags) as s(tag)
          union all
         select f.tag from steward.fill_templates(templates, r.row_values) as f(tag)) as t;
      reads := null;
    end if;
    if reads is not null then
      select case tg_op when 'INSERT' then t.tags_on_insert when 'UPDATE' then t.tags_on_update else t.tags_on_delete end
        into tag_query
        from steward.tracked_tables t where t.target = tg_relid;
      if tag_query is null then
        return null;
      end if;
      execute tag_query into row_tags;
      any_rows := row_tags is not null;
      -- Fixed tags need only know whether the statement changed any row.
      if not any_rows and pg_catalog.cardinality(static_tags) > 0 then
        execute case reads when 'old' then 'select exists (select from old_rows)' else 'select exists (select from new_rows)' end
          into any_rows;
      end if;
      if any_rows then
        tags := static_tags || coalesce(row_tags, '{}');
      end if;
    end if;
    -- A tag the queue cannot hold (a long placeholder value) must not fail the write: it
    -- becomes a dead letter saying why, and the other tags are enqueued. (Fixed tags were
    -- checked by track_table.)
    if exists (select from pg_catalog.unnest(tags) as u(tag) where pg_catalog.length(u.tag) > 1000) then
      insert into steward.dead_letters
        (source, task_identifier, payload, attempts, max_attempts, last_error, is_permanent, failed_at)
      select 'invalidation', 'drain_invalidations', pg_catalog.jsonb_build_object('tag', l.tag), 0,
             steward.setting_integer('invalidations.max_attempts'),
             pg_catalog.format('a write to %s made a tag of %s characters; the queue holds tags of up to 1000',
                               tg_relid::regclass, pg_catalog.length(l.tag)),
             true, pg_catalog.now()
        from (select distinct u.tag from pg_catalog.unnest(tags) as u(tag) where pg_catalog.length(u.tag) > 1000) as l;
    end if;
  end if;
  if tags is null then
    return null;
  end if;
  -- Wake a sleeping drainer, as steward.enqueue_invalidations does (see there).
  if pg_catalog.current_setting('steward.drainers_woken', true) is distinct from 'on' then
    perform pg_catalog.set_config('steward.drainers_woken', 'on', true);
    if exists (select from steward.sleeping_drainers s where s.sleep_until > pg_catalog.now()) then
      perform pg_catalog.pg_notify('steward_invalidations', '');
    end if;
  end if;
  -- One row per distinct tag, appended: nothing here waits for another transaction.
  insert into steward.invalidations (tag, deliver_at)
  select distinct u.tag, pg_catalog.now()
    from pg_catalog.unnest(tags) as u(tag)
   where u.tag <> '' and pg_catalog.length(u.tag) <= 1000;
  return null;
end
$$;
comment on function steward.invalidate_from_statement() is
  'Statement-level trigger of tracked tables: computes the distinct tags of the changed rows from the transition tables and enqueues each once (a table with fixed tags only has no transition tables and enqueues them for every statement). A tag longer than the queue''s 1000 characters (from a long placeholder value) becomes a permanent dead letter instead of failing the write.';
