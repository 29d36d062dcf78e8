--! Previous: sha1:eda9e0e878fad11a8e6ffc6a98636ee41f0132c9
--! Hash: sha1:e462ec997352ae859f37a2551db26a4307b31a05
--! Message: invalidations

-- The cache-invalidation queue: tags to deliver to caches (sinks) after data changes.
-- Promise: after a write to a tracked table commits, each of its tags is delivered by a delivery
-- that was claimed after that commit; nothing is lost when a worker or a sink dies.
--
-- How the promise is kept:
-- * A pending entry that nobody has claimed absorbs later enqueues of its tag (dedup). The
--   writer's enqueue locks that row until the writer commits, and claims skip locked rows, so
--   the entry cannot be claimed before the write is visible.
-- * Once claimed, an entry absorbs nothing: an enqueue after the claim makes a new entry.
-- * A claim expires after its visibility timeout: a dead worker's entries are claimed again.

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('invalidations.max_delay', '1 minute', 'interval', '0 seconds', '1 day',
   'Debounce never delays a tag past its first enqueue plus this.'),
  ('invalidations.max_attempts', '10', 'integer', '1', '1000',
   'Deliveries tried before an entry moves to the dead letters.'),
  ('invalidations.backoff_base', '1 second', 'interval', '1 millisecond', '1 hour',
   'First retry delay after a failed delivery; doubles per attempt, with jitter.'),
  ('invalidations.backoff_max', '10 minutes', 'interval', '1 millisecond', '7 days',
   'Longest retry delay after a failed delivery.')
on conflict (name) do nothing;

create table steward.invalidations (
  id            bigint generated always as identity primary key,
  tag           text not null check (tag <> '' and pg_catalog.length(tag) <= 1000),
  enqueued_at   timestamptz not null default pg_catalog.now(),
  deliver_at    timestamptz not null,
  claimed_until timestamptz,
  attempts      integer not null default 0,
  last_error    text
) with (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
comment on table steward.invalidations is
  'Cache-invalidation queue: undelivered entries only (completion deletes). Claimed while claimed_until is in the future. Use the functions, not the table.';
comment on column steward.invalidations.enqueued_at is 'First enqueue of this entry: max_delay counts from here.';
comment on column steward.invalidations.deliver_at is 'Not claimed before this (debounce, retry backoff).';
comment on column steward.invalidations.claimed_until is 'Set by a claim; after it passes without completion the entry may be claimed again.';
comment on column steward.invalidations.attempts is 'Claims so far (a claim is a delivery attempt).';

-- One pending, unclaimed entry per tag: the dedup rule.
create unique index invalidations_pending_tag_idx on steward.invalidations (tag) where claimed_until is null;
-- What claims scan.
create index invalidations_due_idx on steward.invalidations (deliver_at, id);

create table steward.tracked_tables (
  target         regclass primary key,
  tags           text[] not null,
  static_tags    text[] not null,
  tags_on_insert text,
  tags_on_update text,
  tags_on_delete text,
  tracked_at     timestamptz not null default pg_catalog.now(),
  disabled_at    timestamptz
);
comment on table steward.tracked_tables is
  'Tables whose writes enqueue invalidation tags (track_table). static_tags have no placeholder; tags_on_insert, tags_on_update and tags_on_delete are the queries (over the statement''s transition tables) yielding the distinct tags with {column} placeholders filled, null when there are none.';
comment on column steward.tracked_tables.disabled_at is
  'When disable_tracking switched its triggers off (null: on). While off its writes enqueue nothing.';

-- Enqueueing ------------------------------------------------------------------------------------

create function steward.wake_drainers(fresh bigint[])
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  -- NOTIFY makes committing transactions queue on one global lock, so a NOTIFY per enqueue
  -- caps enqueue throughput under concurrency. A drainer drains until nothing is due, so it
  -- needs waking only when these entries are the only due ones: otherwise the enqueue of an
  -- earlier one already woke it. (A missed wake costs at most the drainer's poll interval.)
  if not exists (
    select from steward.invalidations i
     where i.deliver_at <= pg_catalog.now() and i.claimed_until is null and i.id <> all (fresh)
  ) then
    perform pg_catalog.pg_notify('steward_invalidations', '');
  end if;
end
$$;
comment on function steward.wake_drainers(bigint[]) is
  'Sends NOTIFY steward_invalidations unless other due entries are already waiting for a drainer. Internal to the enqueue functions.';

create function steward.enqueue_invalidations(tags text[], debounce interval default '0 seconds')
returns integer
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  max_delay interval := steward.setting_interval('invalidations.max_delay');
  wait interval := least(coalesce(enqueue_invalidations.debounce, '0 seconds'), max_delay);
  affected integer;
  fresh bigint[];
begin
  -- Sorted, distinct tags: rows are locked in one order by every writer, so two statements
  -- enqueueing overlapping tags wait for each other instead of deadlocking. xmax = 0 marks a
  -- row this statement inserted (not an existing pending entry it pushed back).
  with upserted as (
    insert into steward.invalidations as i (tag, deliver_at)
    select t.tag, pg_catalog.now() + wait
      from (select distinct u.tag from pg_catalog.unnest(enqueue_invalidations.tags) as u(tag)
             where u.tag is not null and u.tag <> '' order by u.tag) as t
    on conflict (tag) where claimed_until is null
    do update set deliver_at = least(greatest(i.deliver_at, excluded.deliver_at), i.enqueued_at + max_delay)
    returning i.id, i.xmax = 0 as inserted, i.deliver_at
  )
  select pg_catalog.count(*), pg_catalog.array_agg(u.id) filter (where u.inserted and u.deliver_at <= pg_catalog.now())
    into affected, fresh
    from upserted u;
  if fresh is not null then
    perform steward.wake_drainers(fresh);
  end if;
  return affected;
end
$$;
comment on function steward.enqueue_invalidations(text[], interval) is
  'Enqueues several tags at once (used by tracked-table triggers); same rules as enqueue_invalidation. Returns how many entries were made or pushed back.';

create function steward.enqueue_invalidation(tag text, debounce interval default '0 seconds')
returns bigint
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  result bigint;
begin
  if enqueue_invalidation.tag is null or enqueue_invalidation.tag = '' then
    raise exception 'tag must be a non-empty string' using errcode = '22023';
  end if;
  if pg_catalog.length(enqueue_invalidation.tag) > 1000 then
    raise exception 'tag is % characters long; the limit is 1000', pg_catalog.length(enqueue_invalidation.tag)
      using errcode = '22001';
  end if;
  if enqueue_invalidation.debounce is null or enqueue_invalidation.debounce < '0 seconds' then
    raise exception 'debounce must be zero or positive, got %', coalesce(enqueue_invalidation.debounce::text, 'null')
      using errcode = '22023';
  end if;
  -- The dedup and debounce rule lives in one statement, in enqueue_invalidations. Its upsert
  -- holds the pending entry's row lock until commit, so the entry read back here is that one:
  -- nobody can claim it in between.
  perform steward.enqueue_invalidations(array[enqueue_invalidation.tag], enqueue_invalidation.debounce);
  select i.id into result from steward.invalidations i
   where i.tag = enqueue_invalidation.tag and i.claimed_until is null;
  return result;
end
$$;
comment on function steward.enqueue_invalidation(text, interval) is
  'Asks for the tag to be delivered to the sinks. While an entry for the tag is pending and unclaimed, no second one is made: a later enqueue may push its delivery back by debounce, but never past the first enqueue plus invalidations.max_delay. Returns the pending entry''s id.';

-- Tracking tables ------------------------------------------------------------------------------

create function steward.invalidate_from_statement()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  spec steward.tracked_tables;
  tag_query text;
  any_rows boolean := false;
  row_tags text[];
begin
  select * into spec from steward.tracked_tables t where t.target = tg_relid;
  if not found then
    return null;
  end if;
  -- The tag query was built by track_table for this event: no SQL is composed here.
  tag_query := case tg_op when 'INSERT' then spec.tags_on_insert
                          when 'UPDATE' then spec.tags_on_update
                          else spec.tags_on_delete end;
  if tag_query is not null then
    execute tag_query into row_tags;
    any_rows := row_tags is not null;
  end if;
  -- Fixed tags need only know whether the statement changed any row.
  if not any_rows and pg_catalog.cardinality(spec.static_tags) > 0 then
    execute case tg_op when 'INSERT' then 'select exists (select from new_rows)'
                       else 'select exists (select from old_rows)' end
      into any_rows;
  end if;
  if any_rows then
    perform steward.enqueue_invalidations(spec.static_tags || coalesce(row_tags, '{}'));
  end if;
  return null;
end
$$;
comment on function steward.invalidate_from_statement() is
  'Statement-level trigger of tracked tables: computes the distinct tags of the changed rows (old and new) from the transition tables and enqueues each once.';

create function steward.track_table(target regclass, tags text[])
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  relation record;
  template text;
  piece text;
  column_name text;
  static text[] := '{}';
  conditions text[];
  parts text[];
  columns text[];
  known_columns text[];
  changed text;
  queries text[] := array[null, null, null];
  event integer;
begin
  if target is null then
    raise exception 'target must name a table' using errcode = '22004';
  end if;
  select c.relkind, c.relname, n.nspname into relation
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.oid = target;
  if relation.relkind not in ('r', 'p') then
    raise exception '% is not a table (relkind %)', target, relation.relkind
      using errcode = '22023', hint = 'track_table takes an ordinary or partitioned table.';
  end if;
  if tags is null or pg_catalog.cardinality(tags) = 0 then
    raise exception 'tags must be a non-empty array of tag templates' using errcode = '22023',
      hint = 'For example: array[''products'', ''product:{id}''].';
  end if;
  select pg_catalog.array_agg(a.attname::text order by a.attnum) into known_columns
    from pg_catalog.pg_attribute a
   where a.attrelid = target and a.attnum > 0 and not a.attisdropped;

  foreach template in array tags loop
    if template is null or template = '' then
      raise exception 'tags must not contain empty or null templates' using errcode = '22023';
    end if;
    if pg_catalog.length(template) > 1000 then
      raise exception 'tag template "%" is longer than 1000 characters', pg_catalog.left(template, 40) || '…'
        using errcode = '22001';
    end if;
    if template !~ '[{}]' then
      static := static || template;
      continue;
    end if;
    -- Split "a:{x}:b{y}" into literals and columns; each column must exist.
    parts := '{}';
    conditions := '{}';
    columns := '{}';
    for piece in select m[1] from pg_catalog.regexp_matches(template, '(\{[^{}]*\}|[^{}]+|[{}])', 'g') as m loop
      if piece ~ '^\{[^{}]*\}$' then
        column_name := pg_catalog.substr(piece, 2, pg_catalog.length(piece) - 2);
        if not column_name = any (known_columns) then
          raise exception 'tag template "%" names column "%", which % does not have', template, column_name, target
            using errcode = '42703', hint = 'Columns: ' || pg_catalog.array_to_string(known_columns, ', ');
        end if;
        parts := parts || pg_catalog.format('d.%I::text', column_name);
        if not column_name = any (columns) then
          columns := columns || pg_catalog.format('%I', column_name);
          conditions := conditions || pg_catalog.format('%I is not null', column_name);
        end if;
      elsif piece in ('{', '}') then
        raise exception 'tag template "%" has an unmatched brace', template using errcode = '22023',
          hint = 'Placeholders look like {column}.';
      else
        parts := parts || pg_catalog.quote_literal(piece);
      end if;
    end loop;
    -- Distinct column values first, then the text: a 100,000-row statement touching 10
    -- providers builds 10 strings, not 100,000.
    for event in 1..3 loop
      changed := case event when 1 then 'new_rows' when 2 then '(select * from old_rows union all select * from new_rows)'
                                else 'old_rows' end;
      queries[event] := coalesce(queries[event] || ' union ', '') || pg_catalog.format(
        'select %s as tag from (select distinct %s from %s as changed where %s) as d',
        pg_catalog.array_to_string(parts, ' || '), pg_catalog.array_to_string(columns, ', '), changed,
        pg_catalog.array_to_string(conditions, ' and '));
    end loop;
  end loop;

  for event in 1..3 loop
    if queries[event] is not null then
      queries[event] := pg_catalog.format('select pg_catalog.array_agg(tag) from (%s) as tags', queries[event]);
    end if;
  end loop;

  insert into steward.tracked_tables as t (target, tags, static_tags, tags_on_insert, tags_on_update, tags_on_delete)
  values (target, tags, static, queries[1], queries[2], queries[3])
  on conflict on constraint tracked_tables_pkey do update
    set tags = excluded.tags, static_tags = excluded.static_tags, tags_on_insert = excluded.tags_on_insert,
        tags_on_update = excluded.tags_on_update, tags_on_delete = excluded.tags_on_delete,
        tracked_at = pg_catalog.now(), disabled_at = null;

  execute pg_catalog.format('drop trigger if exists steward_invalidate_insert on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_update on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_delete on %s', target);
  -- One trigger per event: a trigger with transition tables may fire on one event only.
  execute pg_catalog.format(
    'create trigger steward_invalidate_insert after insert on %s referencing new table as new_rows '
    'for each statement execute function steward.invalidate_from_statement()', target);
  execute pg_catalog.format(
    'create trigger steward_invalidate_update after update on %s referencing old table as old_rows new table as new_rows '
    'for each statement execute function steward.invalidate_from_statement()', target);
  execute pg_catalog.format(
    'create trigger steward_invalidate_delete after delete on %s referencing old table as old_rows '
    'for each statement execute function steward.invalidate_from_statement()', target);

  perform steward.audit('track_table', target::text, pg_catalog.jsonb_build_object('tags', tags));
end
$$;
comment on function steward.track_table(regclass, text[]) is
  'Makes every insert, update and delete on the table enqueue the given tags, once per distinct tag per statement (statement-level triggers with transition tables). A tag may hold {column} placeholders filled from the changed rows, old and new; rows where a placeholder column is null yield no tag. Calling it again replaces the tags. TRUNCATE is not tracked. Audited.';

create function steward.untrack_table(target regclass)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if target is null then
    raise exception 'target must name a table' using errcode = '22004';
  end if;
  execute pg_catalog.format('drop trigger if exists steward_invalidate_insert on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_update on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_delete on %s', target);
  delete from steward.tracked_tables t where t.target = untrack_table.target;
  if not found then
    return false;
  end if;
  perform steward.audit('untrack_table', target::text);
  return true;
end
$$;
comment on function steward.untrack_table(regclass) is
  'Removes the invalidation triggers of a tracked table. Returns whether it was tracked. Audited.';

create function steward.set_tracking(target regclass, enabled boolean)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  tracked regclass;
  switched integer := 0;
begin
  if target is not null and not exists (select from steward.tracked_tables t where t.target = set_tracking.target) then
    raise exception 'table % is not tracked', target using errcode = 'P0002',
      hint = 'select target from steward.tracked_tables lists the tracked tables.';
  end if;
  for tracked in
    select t.target from steward.tracked_tables t
     where (set_tracking.target is null or t.target = set_tracking.target)
       and (t.disabled_at is null) = not enabled
       and exists (select from pg_catalog.pg_class c where c.oid = t.target)
     order by t.target::text
  loop
    -- ALTER TABLE … DISABLE TRIGGER: while off, no steward code runs in the table's writes at all.
    execute pg_catalog.format('alter table %s %s trigger steward_invalidate_insert, %2$s trigger steward_invalidate_update, %2$s trigger steward_invalidate_delete',
      tracked, case when enabled then 'enable' else 'disable' end);
    update steward.tracked_tables t
       set disabled_at = case when enabled then null else pg_catalog.now() end
     where t.target = tracked;
    perform steward.audit(case when enabled then 'enable_tracking' else 'disable_tracking' end, tracked::text);
    switched := switched + 1;
  end loop;
  return switched;
end
$$;
comment on function steward.set_tracking(regclass, boolean) is
  'Internal to disable_tracking and enable_tracking: switches the invalidation triggers of one tracked table (or of all when target is null) off or on; returns how many tables it switched.';

create function steward.disable_tracking(target regclass default null)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$ select steward.set_tracking(target, false) $$;
comment on function steward.disable_tracking(regclass) is
  'Switches tracking of a table off (every tracked table when target is null) without untracking it: its invalidation triggers are disabled, so its writes run as without pg-steward and enqueue nothing, until enable_tracking. Returns how many tables it switched off; a table that is not tracked is an error (P0002). Audited. Needs the table''s owner.';

create function steward.enable_tracking(target regclass default null)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$ select steward.set_tracking(target, true) $$;
comment on function steward.enable_tracking(regclass) is
  'Switches tracking of a table back on (every switched-off table when target is null): writes from now on enqueue their tags again. Writes made while it was off enqueued nothing; enqueue their tags by hand if caches must hear of them. Returns how many tables it switched on. Audited.';

-- Delivering -----------------------------------------------------------------------------------

create function steward.dead_letter_invalidations(ids bigint[], error text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  moved integer;
begin
  with gone as (
    delete from steward.invalidations i
     where i.id = any (dead_letter_invalidations.ids)
    returning i.*
  )
  insert into steward.dead_letters
    (source, task_identifier, payload, queue_name, attempts, max_attempts, last_error, original_id, failed_at)
  select 'invalidation', 'drain_invalidations', pg_catalog.jsonb_build_object('tag', gone.tag), null,
         gone.attempts, steward.setting_integer('invalidations.max_attempts'),
         coalesce(dead_letter_invalidations.error, gone.last_error), gone.id, pg_catalog.now()
    from gone;
  get diagnostics moved = row_count;
  return moved;
end
$$;
comment on function steward.dead_letter_invalidations(bigint[], text) is
  'Moves entries to steward.dead_letters (source invalidation, payload {"tag"}) in one statement: for entries out of attempts, or whose tag can never be delivered.';

create function steward.claim_invalidations(max integer, visibility interval default '60 seconds')
returns table (id bigint, tag text, attempts integer)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  max_attempts integer := steward.setting_integer('invalidations.max_attempts');
  exhausted bigint[];
begin
  if claim_invalidations.max is null or claim_invalidations.max < 1 or claim_invalidations.max > 10000 then
    raise exception 'max must be from 1 to 10000, got %', coalesce(claim_invalidations.max::text, 'null')
      using errcode = '22023';
  end if;
  if visibility is null or visibility <= '0 seconds' then
    raise exception 'visibility must be positive, got %', coalesce(visibility::text, 'null') using errcode = '22023';
  end if;
  -- Entries claimed max_attempts times without completing (their workers died each time) go to
  -- the dead letters instead of being claimed again.
  select pg_catalog.array_agg(i.id) into exhausted
    from (select i.id from steward.invalidations i
           where i.claimed_until < pg_catalog.now() and i.attempts >= max_attempts
           limit claim_invalidations.max for update skip locked) as i;
  if exhausted is not null then
    perform steward.dead_letter_invalidations(exhausted,
      pg_catalog.format('claimed %s times without completing (visibility timeout expired)', max_attempts));
  end if;

  return query
  with picked as (
    select i.id from steward.invalidations i
     where i.deliver_at <= pg_catalog.now()
       and (i.claimed_until is null or i.claimed_until < pg_catalog.now())
     order by i.deliver_at, i.id
     limit claim_invalidations.max
     for update skip locked
  )
  update steward.invalidations i
     set claimed_until = pg_catalog.now() + visibility, attempts = i.attempts + 1
    from picked
   where i.id = picked.id
  returning i.id, i.tag, i.attempts;
end
$$;
comment on function steward.claim_invalidations(integer, interval) is
  'Claims up to max due entries (SKIP LOCKED, so many drainers share the queue). An entry not completed or failed within visibility can be claimed again; one claimed invalidations.max_attempts times moves to the dead letters.';

create function steward.complete_invalidations(ids bigint[])
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with done as (
    delete from steward.invalidations i where i.id = any (ids) returning 1
  )
  select pg_catalog.count(*)::integer from done;
$$;
comment on function steward.complete_invalidations(bigint[]) is
  'Records the delivery of claimed entries by deleting them. Returns how many it deleted (entries already gone are ignored).';

create function steward.requeue_invalidations(ids bigint[], error text, retry_at timestamptz[], count_attempt boolean)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  -- Delete and re-insert rather than update: an enqueue of the same tag after the claim may
  -- have made a pending entry meanwhile, and the re-insert folds into it through the same
  -- ON CONFLICT rule enqueue uses, with no window for a duplicate.
  with gone as (
    delete from steward.invalidations i
     using unnest(ids, retry_at) as r(id, retry_at)  -- multi-argument unnest: FROM-clause syntax, unqualified
     where i.id = r.id
    returning i.tag, i.enqueued_at, i.attempts - case when count_attempt then 0 else 1 end as attempts,
              i.last_error, r.retry_at
  ), requeued as (
    insert into steward.invalidations as p (tag, enqueued_at, deliver_at, attempts, last_error)
    select distinct on (g.tag) g.tag, g.enqueued_at, g.retry_at, g.attempts, coalesce(error, g.last_error)
      from gone g
     order by g.tag, g.attempts desc
    on conflict (tag) where claimed_until is null
    do update set deliver_at = greatest(p.deliver_at, excluded.deliver_at),
                  attempts = greatest(p.attempts, excluded.attempts),
                  last_error = excluded.last_error
    returning 1
  )
  select pg_catalog.count(*)::integer from requeued;
$$;
comment on function steward.requeue_invalidations(bigint[], text, timestamptz[], boolean) is
  'Puts claimed entries back in the queue for the given times, folding each into a pending entry of the same tag if one exists. Internal to fail_invalidations and release_invalidations.';

create function steward.fail_invalidations(ids bigint[], error text, retry_in interval default null)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  max_attempts integer := steward.setting_integer('invalidations.max_attempts');
  base interval := steward.setting_interval('invalidations.backoff_base');
  cap interval := steward.setting_interval('invalidations.backoff_max');
  out_of_attempts bigint[];
  retry_ids bigint[];
  retry_times timestamptz[];
begin
  if retry_in is not null and retry_in < '0 seconds' then
    raise exception 'retry_in must be zero or positive, got %', retry_in using errcode = '22023';
  end if;
  select pg_catalog.array_agg(i.id) filter (where i.attempts >= max_attempts),
         pg_catalog.array_agg(i.id) filter (where i.attempts < max_attempts),
         -- Exponential backoff with full jitter between half and the whole delay, unless the sink
         -- said when to come back (Retry-After).
         pg_catalog.array_agg(pg_catalog.now() + coalesce(retry_in,
           least(cap, base * pg_catalog.power(2, greatest(i.attempts - 1, 0))) * (0.5 + pg_catalog.random() / 2)))
           filter (where i.attempts < max_attempts)
    into out_of_attempts, retry_ids, retry_times
    from steward.invalidations i
   where i.id = any (ids);
  return case when out_of_attempts is null then 0 else steward.dead_letter_invalidations(out_of_attempts, error) end
       + case when retry_ids is null then 0 else steward.requeue_invalidations(retry_ids, error, retry_times, true) end;
end
$$;
comment on function steward.fail_invalidations(bigint[], text, interval) is
  'Records a failed delivery: each entry is retried after retry_in when given (a sink''s Retry-After), else after exponential backoff with jitter; an entry out of attempts (invalidations.max_attempts) moves to the dead letters. Returns how many entries it handled.';

create function steward.release_invalidations(ids bigint[], retry_in interval)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select steward.requeue_invalidations(ids, null,
    pg_catalog.array_fill(pg_catalog.now() + coalesce(retry_in, '0 seconds'), array[pg_catalog.cardinality(ids)]), false);
$$;
comment on function steward.release_invalidations(bigint[], interval) is
  'Gives claimed entries back without counting the attempt (a drainer that could not try them: an open circuit, a shutdown).';

create function steward.refresh_from_tags(ids bigint[])
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  entry record;
  view_name text;
  target regclass;
  scheduled integer := 0;
begin
  for entry in
    select i.id, i.tag from steward.invalidations i
     where i.id = any (ids) and i.tag like 'mv:%'
     order by i.tag
       for update of i
  loop
    view_name := pg_catalog.substr(entry.tag, 4);
    begin
      target := pg_catalog.to_regclass(view_name);
      if target is null then
        raise exception 'materialized view % does not exist', view_name using errcode = '42P01';
      end if;
      perform steward.schedule_refresh(target);
      delete from steward.invalidations i where i.id = entry.id;
      scheduled := scheduled + 1;
    exception
      -- The tag names something that can never be refreshed: no retry can help.
      when undefined_table or invalid_parameter_value or no_data_found or wrong_object_type or invalid_name then
        perform steward.dead_letter_invalidations(array[entry.id], pg_catalog.format('%s: %s', entry.tag, sqlerrm));
    end;
  end loop;
  return scheduled;
end
$$;
comment on function steward.refresh_from_tags(bigint[]) is
  'Handles claimed mv:<schema>.<view> entries among ids: schedules a refresh of each view (steward.schedule_refresh, debounced and deduplicated there) and deletes the entry; a tag naming no registered materialized view goes to the dead letters. Returns how many refreshes it scheduled.';

create function steward.drain_notify(max integer, channel text)
returns table (delivered integer, refreshes integer)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  ids bigint[];
  tag_ids bigint[];
  tags text[];
  tag text;
  piece text;
  payload text := '';
begin
  if drain_notify.max is null or drain_notify.max < 1 or drain_notify.max > 10000 then
    raise exception 'max must be from 1 to 10000, got %', coalesce(drain_notify.max::text, 'null') using errcode = '22023';
  end if;
  if channel is null or channel = '' then
    raise exception 'channel must be a non-empty string' using errcode = '22023';
  end if;
  select pg_catalog.array_agg(due.id), pg_catalog.array_agg(due.id) filter (where due.tag not like 'mv:%')
    into ids, tag_ids
    from (select i.id, i.tag from steward.invalidations i
           where i.deliver_at <= pg_catalog.now()
             and (i.claimed_until is null or i.claimed_until < pg_catalog.now())
           order by i.deliver_at, i.id
           limit drain_notify.max
             for update skip locked) as due;
  if ids is null then
    return query select 0, 0;
    return;
  end if;
  refreshes := steward.refresh_from_tags(ids);
  with gone as (delete from steward.invalidations i where i.id = any (tag_ids) returning i.tag)
  select pg_catalog.array_agg(distinct gone.tag order by gone.tag) into tags from gone;
  delivered := coalesce(pg_catalog.cardinality(tag_ids), 0);
  -- JSON arrays of tags, each under pg_notify's 8000-byte payload limit.
  foreach tag in array coalesce(tags, '{}') loop
    piece := pg_catalog.to_json(tag)::text;
    if payload <> '' and pg_catalog.octet_length(payload) + pg_catalog.octet_length(piece) + 3 > 7999 then
      perform pg_catalog.pg_notify(channel, '[' || payload || ']');
      payload := '';
    end if;
    payload := case when payload = '' then piece else payload || ',' || piece end;
  end loop;
  if payload <> '' then
    perform pg_catalog.pg_notify(channel, '[' || payload || ']');
  end if;
  return next;
end
$$;
comment on function steward.drain_notify(integer, text) is
  'Delivers up to max due entries to the notify sink in one transaction: their tags are sent with pg_notify on channel as JSON arrays (each under 8000 bytes) and the entries deleted, so the notifications go out exactly when the deletion commits. mv: tags schedule refreshes instead. The drainer uses it when notify is the only sink.';

-- The queue's state: for the drainer, status, health and /metrics ------------------------------

create function steward.pending_invalidations()
returns table (state text, entries bigint, oldest_enqueued_at timestamptz)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select s.state, coalesce(c.entries, 0), c.oldest_enqueued_at
    from (values ('ready'), ('scheduled'), ('claimed')) as s(state)
    left join (
      select case when i.claimed_until > pg_catalog.now() then 'claimed'
                  when i.deliver_at > pg_catalog.now() then 'scheduled'
                  else 'ready' end as state,
             pg_catalog.count(*) as entries, pg_catalog.min(i.enqueued_at) as oldest_enqueued_at
        from steward.invalidations i
       group by 1) as c on c.state = s.state
$$;
comment on function steward.pending_invalidations() is
  'Undelivered invalidation entries by state, every state always present: ready (due and unclaimed, or its claim expired), scheduled (debounced or backing off after a failure), claimed (being delivered); with the oldest entry''s first enqueue. The one definition of these states.';

create function steward.next_invalidation_at()
returns timestamptz
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select least((select pg_catalog.min(i.deliver_at) from steward.invalidations i where i.claimed_until is null),
               (select pg_catalog.min(i.claimed_until) from steward.invalidations i where i.claimed_until is not null))
$$;
comment on function steward.next_invalidation_at() is
  'The earliest moment an entry may become claimable (a debounce or backoff ending, a claim expiring); null when the queue is empty. The drainer sleeps until then.';

create function steward.invalidation_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with p as (select * from steward.pending_invalidations())
  select 'steward_invalidations_pending', 'gauge',
         'Undelivered invalidation entries by state (ready: due and unclaimed; scheduled: debounced or backing off; claimed: being delivered).',
         pg_catalog.jsonb_build_object('state', p.state), p.entries::float8
    from p
  union all
  select 'steward_invalidations_oldest_pending_seconds', 'gauge',
         'Age of the oldest undelivered invalidation entry (0 when none).',
         '{}'::jsonb,
         coalesce(extract(epoch from pg_catalog.now() - pg_catalog.min(p.oldest_enqueued_at)), 0)::float8
    from p
$$;
comment on function steward.invalidation_metrics() is
  'Metric source of the invalidation queue: steward_invalidations_pending{state} and steward_invalidations_oldest_pending_seconds.';

insert into steward.metric_sources (name, function, description) values
  ('invalidations', 'steward.invalidation_metrics()', 'undelivered invalidations by state, and the oldest one''s age')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function steward.enqueue_invalidation(text, interval) to steward_client;
