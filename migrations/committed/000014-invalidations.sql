--! Previous: sha1:8d4773e5b35e4787b49e0c021c89798629ef418b
--! Hash: sha1:4d6940701b76d068ffc7431b7a852d9e8df52b61
--! Message: invalidations

-- The cache-invalidation queue: tags to deliver to caches (sinks) after data changes.
-- Promise: after a write to a tracked table commits, each of its tags is delivered by a delivery
-- that was claimed after that commit; nothing is lost when a worker or a sink dies.
--
-- How the promise is kept without making one writer wait for another:
-- * An enqueue only appends a row (no unique key, no row it updates), so it never waits for
--   another transaction. A row is invisible until its writer commits, so no claim can take it
--   before the write is visible.
-- * The pending entry of a tag is the set of its unclaimed rows. A claim takes every committed
--   unclaimed row of the tag and folds them into the oldest: one delivery however many writes
--   came before it. Claims take turns (a transaction-level advisory lock held for the claim's
--   milliseconds) so that two never split a tag's rows; deliveries run in parallel. The entry is due when its latest deliver_at is (debounce), and that
--   is never later than its first enqueue plus max_delay.
-- * Once claimed, an entry absorbs nothing: rows appended after the claim are a new entry.
-- * A claim expires after its visibility timeout: a dead worker's entries are claimed again.
--   A claimed row's deliver_at is its claimed_until, so "due" (deliver_at <= now()) means
--   "claimable" for every row and claims scan one index.
--
-- Plans: the functions that look rows up in the queue run with enable_seqscan = off, so they
-- always go through an index. The queue is often empty for hours and then holds a million
-- rows: a plan cached while it was empty (plpgsql caches plans; generic ones after five calls)
-- reads it whole for every batch or enqueue once it has grown, and even a fresh plan reads it
-- whole rather than probe it a few hundred times, because the cost model prices each probe as
-- a page read from disk where a busy queue's pages are in memory. With index scans,
-- "x = any (array)" costs one probe per element, whether the plan is generic or not.
-- They also run with jit = off: up to PostgreSQL 17 a disabled seq scan is priced at 1e10,
-- and a statement that must still scan (sleeping_drainers has no index worth using) then
-- passes every jit_*_above_cost and is compiled with inlining: 100 to 200 ms per enqueue on
-- PostgreSQL 15 where the statement itself takes microseconds (the load test's p95 on 15).

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
  tag           text collate "C" not null check (tag <> '' and pg_catalog.length(tag) <= 1000),
  enqueued_at   timestamptz not null default pg_catalog.now(),
  deliver_at    timestamptz not null,
  claimed_until timestamptz,
  attempts      integer not null default 0,
  last_error    text
) with (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
comment on table steward.invalidations is
  'Cache-invalidation queue: undelivered rows only (completion deletes). Each enqueue appends a row; a claim folds the pending rows of a tag into one (see steward.pending_invalidations for one row per tag). Use the functions, not the table.';
comment on column steward.invalidations.tag is 'Compared byte by byte (collation C): a tag is an opaque key, and claims look tags up by the hundred.';
comment on column steward.invalidations.enqueued_at is 'When this row (or the oldest row folded into it) was enqueued: max_delay counts from the oldest pending one.';
comment on column steward.invalidations.deliver_at is 'Not claimed before this (debounce, retry backoff; for a claimed row, its claimed_until). A tag is claimed when the latest deliver_at of its pending rows has passed.';
comment on column steward.invalidations.claimed_until is 'Set by a claim; after it passes without completion the row may be claimed again.';
comment on column steward.invalidations.attempts is 'Claims so far (a claim is a delivery attempt).';

-- What claims scan, in order; due rows only (deliver_at <= now()).
create index invalidations_due_idx on steward.invalidations (deliver_at, id);
-- The rows of one tag: what a claim folds, and the pending entry an enqueue reports.
create index invalidations_tag_idx on steward.invalidations (tag, id);
-- Claims in flight (few): the expired ones out of attempts go to the dead letters.
create index invalidations_claimed_idx on steward.invalidations (claimed_until) where claimed_until is not null;

create view steward.pending_invalidations as
select pg_catalog.min(i.id) as id,
       i.tag,
       pg_catalog.min(i.enqueued_at) as enqueued_at,
       pg_catalog.max(i.deliver_at) as deliver_at,
       pg_catalog.max(i.attempts) as attempts,
       pg_catalog.count(*)::integer as enqueues
  from steward.invalidations i
 where i.claimed_until is null or i.deliver_at <= pg_catalog.now()
 group by i.tag;
comment on view steward.pending_invalidations is
  'The pending (unclaimed) entry of each tag, as the next claim will see it: id is the id the claim reports and enqueue_invalidation returns, deliver_at when it becomes due, enqueues how many rows (enqueues not yet folded) it holds.';

create table steward.tracked_tables (
  target              regclass primary key,
  tags                text[] not null,
  static_tags         text[] not null,
  templates           jsonb,
  tags_on_insert      text,
  tags_on_update      text,
  tags_on_delete      text,
  tracked_at          timestamptz not null default pg_catalog.now(),
  disabled_at         timestamptz
);
comment on table steward.tracked_tables is
  'Tables whose writes enqueue invalidation tags (track_table), and what their triggers were built from. static_tags have no placeholder; templates are the tags with {column} placeholders as steward.fill_templates reads them (null when there are none: the triggers then capture no rows); tags_on_insert, tags_on_update and tags_on_delete are the queries over a statement''s transition tables that fill them for statements of many rows.';
comment on column steward.tracked_tables.disabled_at is
  'When disable_tracking switched its triggers off (null: on). While off its writes enqueue nothing.';

-- Enqueueing ------------------------------------------------------------------------------------

-- Drainers that sleep, so that an enqueue knows whether to wake one. Written by the drainers
-- only (each its own row); an enqueue reads it. Unlogged: after a crash no drainer sleeps.
create unlogged table steward.sleeping_drainers (
  drainer     text primary key check (drainer <> '' and pg_catalog.length(drainer) <= 200),
  sleep_until timestamptz not null
);
comment on table steward.sleeping_drainers is
  'Drainers asleep (steward.drainer_sleeps) until sleep_until at the latest: an enqueue sends NOTIFY steward_invalidations only while one is. A drainer that died stops counting at sleep_until.';

create function steward.drainer_sleeps(drainer text, sleep_for interval)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  insert into steward.sleeping_drainers as s (drainer, sleep_until)
  values (drainer, pg_catalog.now() + sleep_for)
  on conflict (drainer) do update set sleep_until = excluded.sleep_until;
$$;
comment on function steward.drainer_sleeps(text, interval) is
  'A drainer found nothing to claim and sleeps for at most sleep_for: enqueues NOTIFY steward_invalidations until it wakes.';

create function steward.drainer_wakes(drainer text)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  delete from steward.sleeping_drainers s where s.drainer = drainer_wakes.drainer;
$$;
comment on function steward.drainer_wakes(text) is
  'A drainer is awake (it drains until nothing is due): enqueues stop sending NOTIFY for it.';

create function steward.enqueue_invalidations(tags text[], debounce interval default '0 seconds')
returns integer
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  max_delay interval;
  appended integer;
begin
  if coalesce(enqueue_invalidations.debounce, '0 seconds') <= '0 seconds' then
    -- NOTIFY makes committing transactions queue on one global lock, so one per enqueue would
    -- cap enqueue throughput: it is sent only while a drainer sleeps (a drainer awake drains
    -- until nothing is due), once per transaction. A drainer that falls asleep just before this
    -- commits finds the entry at its next poll.
    if pg_catalog.current_setting('steward.drainers_woken', true) is distinct from 'on' then
      perform pg_catalog.set_config('steward.drainers_woken', 'on', true);
      if exists (select from steward.sleeping_drainers s where s.sleep_until > pg_catalog.now()) then
        perform pg_catalog.pg_notify('steward_invalidations', '');
      end if;
    end if;
    -- One row per distinct tag, appended: nothing here waits for another transaction.
    insert into steward.invalidations (tag, deliver_at)
    select distinct u.tag, pg_catalog.now()
      from pg_catalog.unnest(enqueue_invalidations.tags) as u(tag)
     where u.tag is not null and u.tag <> '';
  else
    -- A debounce pushes the tag's delivery back (a tag is due when its latest row is), but never
    -- past the first enqueue of its pending entry plus max_delay. Such rows are not due now, so
    -- no drainer needs waking: a sleeping drainer's poll finds them. EXECUTE: planned for the queue's
    -- size of the moment, never a plan cached while it was empty (see the header).
    max_delay := steward.setting_interval('invalidations.max_delay');
    execute
      'insert into steward.invalidations (tag, enqueued_at, deliver_at)
       select t.tag, pg_catalog.now(),
              least(pg_catalog.now() + $2, coalesce(f.first_enqueued_at, pg_catalog.now()) + $3)
         from (select distinct u.tag from pg_catalog.unnest($1) as u(tag) where u.tag is not null and u.tag <> '''') as t
         left join lateral (
           select pg_catalog.min(p.enqueued_at) as first_enqueued_at
             from steward.invalidations p
            where p.tag = t.tag and p.claimed_until is null) as f on true'
      using enqueue_invalidations.tags, least(enqueue_invalidations.debounce, max_delay), max_delay;
  end if;
  get diagnostics appended = row_count;
  return appended;
end
$$;
comment on function steward.enqueue_invalidations(text[], interval) is
  'Enqueues several tags at once (used by tracked-table triggers); same rules as enqueue_invalidation, without its checks. Appends one row per distinct tag and returns how many; never waits for another transaction.';

-- The registered materialized view an mv: tag names, or null when it names none. Never raises
-- (to_regclass raises for 'a.b.c' and 'a.b.c.d'): the drain calls it for tags nobody checked.
create function steward.view_named_by_tag(tag text)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  parts text[];
  view_name text;
begin
  -- Exactly two identifiers, unquoted or "quoted", as parse_ident accepts them; anything else
  -- is refused here, so parse_ident below cannot raise.
  if tag is null or tag !~ ('^mv:'
       '([A-Za-z_\u0080-\U0010FFFF][A-Za-z0-9_$\u0080-\U0010FFFF]*|"([^"]|"")+")\.'
       '([A-Za-z_\u0080-\U0010FFFF][A-Za-z0-9_$\u0080-\U0010FFFF]*|"([^"]|"")+")$') then
    return null;
  end if;
  parts := pg_catalog.parse_ident(pg_catalog.substr(tag, 4));
  view_name := pg_catalog.format('%I.%I', parts[1], parts[2]);
  if not exists (select from steward.materialized_views m where m.view = view_name) then
    return null;
  end if;
  return view_name;
end
$$;
comment on function steward.view_named_by_tag(text) is
  'The registered materialized view (schema.name, quoted as in steward.materialized_views) an mv:<schema>.<view> tag names; null for any other tag or an unregistered view. Never raises.';

create function steward.enqueue_invalidation(tag text, debounce interval default '0 seconds')
returns bigint
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
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
  if enqueue_invalidation.tag like 'mv:%' and steward.view_named_by_tag(enqueue_invalidation.tag) is null then
    raise exception 'tag % names no registered materialized view', pg_catalog.quote_literal(enqueue_invalidation.tag)
      using errcode = '22023',
            hint = 'mv: tags are mv:<schema>.<view>, naming a view registered with steward.register_materialized_view.';
  end if;
  perform steward.enqueue_invalidations(array[enqueue_invalidation.tag], enqueue_invalidation.debounce);
  -- The pending entry: the oldest unclaimed row of the tag this transaction sees, which is the
  -- id the next claim folds this enqueue into (unless a concurrent enqueue, not yet committed,
  -- holds an older one).
  select i.id into result from steward.invalidations i
   where i.tag = enqueue_invalidation.tag and (i.claimed_until is null or i.deliver_at <= pg_catalog.now())
   order by i.id
   limit 1;
  return result;
end
$$;
comment on function steward.enqueue_invalidation(text, interval) is
  'Asks for the tag to be delivered to the sinks; never waits for another transaction. Enqueues made before a claim of the tag give one delivery: a later enqueue may push its delivery back by debounce, but never past the first enqueue plus invalidations.max_delay. An mv: tag must name a registered materialized view (22023). Returns the id of the tag''s pending entry.';

-- Tracking tables ------------------------------------------------------------------------------

-- Fills tag templates from one row's values: [{"format": "product:%s", "column_names": ["id"]}]
-- and {"id": 7} give product:7. A row where a placeholder column is null gives no tag of that
-- template. Values render as ->> renders them (as to_jsonb does). No SET clause: it would keep
-- the function from being inlined into the triggers' queries.
create function steward.fill_templates(templates jsonb, row_values jsonb)
returns setof text
language sql
stable
as $$
  select pg_catalog.format(t.format, variadic v.tag_values)
    from pg_catalog.jsonb_to_recordset(templates) as t(format text, column_names text[])
   cross join lateral (
     select pg_catalog.array_agg(row_values ->> c.name order by c.n) as tag_values,
            pg_catalog.bool_and(row_values ->> c.name is not null) as is_complete
       from pg_catalog.unnest(t.column_names) with ordinality as c(name, n)) as v
   where v.is_complete
$$;
comment on function steward.fill_templates(jsonb, jsonb) is
  'The tags of one row (its values as jsonb) for templates in the form track_table stores them (steward.tracked_tables.templates). Internal to the tracking triggers.';

create function steward.invalidate_from_statement()
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
  any_rows boolean := false;
begin
  -- Written by track_table: tg_argv[0] the fixed tags; when a tag has placeholders, tg_argv[1]
  -- the templates and tg_argv[2] the transition tables this trigger has ('new', 'old', or
  -- 'old and new').
  if tg_nargs = 1 then
    -- Fixed tags only: the trigger captures no rows (that would cost more than all the rest),
    -- so it cannot tell a statement that changed no row, and enqueues them anyway.
    perform steward.enqueue_invalidations(static_tags);
    return null;
  end if;
  templates := tg_argv[1]::jsonb;
  reads := tg_argv[2];
  -- A few rows (most statements): the templates are filled row by row by a statement planned
  -- once per table. Many rows: the query track_table wrote for the event takes the distinct
  -- column values first (a 100,000-row statement touching 10 providers builds 10 strings).
  -- (Each statement names only the transition table this trigger has: a statement naming the
  -- other could not even be planned.)
  if reads = 'new' then
    if not exists (select from new_rows offset 16) then
      select pg_catalog.array_agg(distinct f.tag) filter (where f.tag is not null), pg_catalog.count(*) > 0
        into row_tags, any_rows
        from new_rows as r left join lateral steward.fill_templates(templates, pg_catalog.to_jsonb(r)) as f(tag) on true;
      reads := null;
    end if;
  elsif reads = 'old' then
    if not exists (select from old_rows offset 16) then
      select pg_catalog.array_agg(distinct f.tag) filter (where f.tag is not null), pg_catalog.count(*) > 0
        into row_tags, any_rows
        from old_rows as r left join lateral steward.fill_templates(templates, pg_catalog.to_jsonb(r)) as f(tag) on true;
      reads := null;
    end if;
  elsif not exists (select from new_rows offset 16) then
    select pg_catalog.array_agg(distinct f.tag) filter (where f.tag is not null), pg_catalog.count(*) > 0
      into row_tags, any_rows
      from (select pg_catalog.to_jsonb(o) as row_values from old_rows as o
            union all
            select pg_catalog.to_jsonb(n) from new_rows as n) as r
      left join lateral steward.fill_templates(templates, r.row_values) as f(tag) on true;
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
  end if;
  if any_rows then
    perform steward.enqueue_invalidations(static_tags || coalesce(row_tags, '{}'));
  end if;
  return null;
end
$$;
comment on function steward.invalidate_from_statement() is
  'Statement-level trigger of tracked tables: computes the distinct tags of the changed rows from the transition tables and enqueues each once; a table with fixed tags only has no transition tables and enqueues them for every statement.';

-- How a placeholder value becomes text in a tag, in the queries for statements of many rows:
-- as to_jsonb renders it (booleans true/false, timestamps in ISO 8601), as fill_templates does
-- for the others. For the types whose text is the same either way, the cast is cheaper.
create function steward.placeholder_text(column_name text, column_type regtype)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select case when column_type in ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'text'::regtype,
                                   'character varying'::regtype, 'uuid'::regtype, 'numeric'::regtype)
              then pg_catalog.format('d.%I::text', column_name)
              else pg_catalog.format('(pg_catalog.to_jsonb(d.%I) #>> ''{}'')', column_name) end
$$;
comment on function steward.placeholder_text(text, regtype) is
  'The SQL expression (over the distinct column values d) that renders a placeholder column in a tag. Internal to track_table.';

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
  column_type regtype;
  static text[] := '{}';
  conditions text[];
  parts text[];
  columns text[];
  template_format text;
  template_columns text[];
  known_columns text[];
  placeholder_columns text[] := '{}';
  templates jsonb := '[]';
  changed text;
  queries text[] := array[null, null, null];
  event integer;
  event_name text;
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
    if template like 'mv:%' then
      -- Checked here, once: a write to the table must never fail because of its tags.
      if template ~ '[{}]' then
        raise exception 'tag template "%" is an mv: tag with a placeholder, which cannot be checked', template
          using errcode = '22023', hint = 'mv: tags name one registered materialized view: mv:<schema>.<view>.';
      end if;
      if steward.view_named_by_tag(template) is null then
        raise exception 'tag "%" names no registered materialized view', template
          using errcode = '22023',
                hint = 'mv: tags are mv:<schema>.<view>, naming a view registered with steward.register_materialized_view.';
      end if;
    end if;
    if template !~ '[{}]' then
      static := static || template;
      continue;
    end if;
    -- Split "a:{x}:b{y}" into literals and columns; each column must exist.
    parts := '{}';
    conditions := '{}';
    columns := '{}';
    template_format := '';
    template_columns := '{}';
    for piece in select m[1] from pg_catalog.regexp_matches(template, '(\{[^{}]*\}|[^{}]+|[{}])', 'g') as m loop
      if piece ~ '^\{[^{}]*\}$' then
        column_name := pg_catalog.substr(piece, 2, pg_catalog.length(piece) - 2);
        if not column_name = any (known_columns) then
          raise exception 'tag template "%" names column "%", which % does not have', template, column_name, target
            using errcode = '42703', hint = 'Columns: ' || pg_catalog.array_to_string(known_columns, ', ');
        end if;
        select a.atttypid::regtype into column_type
          from pg_catalog.pg_attribute a where a.attrelid = target and a.attname = column_name;
        parts := parts || steward.placeholder_text(column_name, column_type);
        template_format := template_format || '%s';
        template_columns := template_columns || column_name;
        if not column_name = any (columns) then
          columns := columns || pg_catalog.format('%I', column_name);
          conditions := conditions || pg_catalog.format('%I is not null', column_name);
        end if;
        if not column_name = any (placeholder_columns) then
          placeholder_columns := placeholder_columns || column_name;
        end if;
      elsif piece in ('{', '}') then
        raise exception 'tag template "%" has an unmatched brace', template using errcode = '22023',
          hint = 'Placeholders look like {column}.';
      else
        parts := parts || pg_catalog.quote_literal(piece);
        template_format := template_format || pg_catalog.replace(piece, '%', '%%');
      end if;
    end loop;
    templates := templates || pg_catalog.jsonb_build_array(
      pg_catalog.jsonb_build_object('format', template_format, 'column_names', template_columns));
    -- Distinct column values first, then the text: a 100,000-row statement touching 10
    -- providers builds 10 strings, not 100,000. An update reads old and new rows: a row may
    -- move from one placeholder value to another.
    for event in 1..3 loop
      changed := case event when 1 then 'new_rows'
                            when 2 then '(select * from old_rows union all select * from new_rows)'
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
  if pg_catalog.cardinality(placeholder_columns) = 0 then
    templates := null;
  end if;

  insert into steward.tracked_tables as t
    (target, tags, static_tags, templates, tags_on_insert, tags_on_update, tags_on_delete)
  values (target, tags, static, templates, queries[1], queries[2], queries[3])
  on conflict on constraint tracked_tables_pkey do update
    set tags = excluded.tags, static_tags = excluded.static_tags, templates = excluded.templates,
        tags_on_insert = excluded.tags_on_insert, tags_on_update = excluded.tags_on_update,
        tags_on_delete = excluded.tags_on_delete, tracked_at = pg_catalog.now(), disabled_at = null;

  execute pg_catalog.format('drop trigger if exists steward_invalidate_insert on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_update on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_delete on %s', target);
  -- The triggers carry what they enqueue as arguments (invalidate_from_statement reads them):
  -- a write reads no table to learn its tags.
  if templates is null then
    -- Fixed tags only: nothing to read from the rows, so no transition tables to capture.
    foreach event_name in array array['insert', 'update', 'delete'] loop
      execute pg_catalog.format(
        'create trigger %I after %s on %s for each statement execute function steward.invalidate_from_statement(%L)',
        'steward_invalidate_' || event_name, event_name, target, static::text);
    end loop;
  else
    -- One trigger per event: a trigger with transition tables may fire on one event only.
    execute pg_catalog.format(
      'create trigger steward_invalidate_insert after insert on %s referencing new table as new_rows '
      'for each statement execute function steward.invalidate_from_statement(%L, %L, ''new'')',
      target, static::text, templates::text);
    -- Transition tables cannot go with a column list (UPDATE OF), so an update captures its old
    -- rows whatever columns it sets: about 8 % of a bulk update's time. Only the rows whose
    -- placeholder columns changed need them; a row-level trigger fetching those instead cost
    -- 25 times more per moved row (a 100,000-row reassignment: 30 s instead of 1.2 s).
    execute pg_catalog.format(
      'create trigger steward_invalidate_update after update on %s referencing old table as old_rows new table as new_rows '
      'for each statement execute function steward.invalidate_from_statement(%L, %L, ''old and new'')',
      target, static::text, templates::text);
    execute pg_catalog.format(
      'create trigger steward_invalidate_delete after delete on %s referencing old table as old_rows '
      'for each statement execute function steward.invalidate_from_statement(%L, %L, ''old'')',
      target, static::text, templates::text);
  end if;

  perform steward.audit('track_table', target::text, pg_catalog.jsonb_build_object('tags', tags));
end
$$;
comment on function steward.track_table(regclass, text[]) is
  'Makes every insert, update and delete on the table enqueue the given tags, once per distinct tag per statement (statement-level triggers; transition tables only when a tag has a {column} placeholder). Placeholders are filled from the changed rows, new and, where an update changed a placeholder column, old; rows where a placeholder column is null yield no tag of that template. mv: tags must name a registered materialized view (22023). Calling it again replaces the tags. TRUNCATE is not tracked. Audited.';

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
set enable_seqscan = off
set jit = off
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

create function steward.claim_turn()
returns timestamptz
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Claims take turns: a claim takes all the claimable rows of its tags, and two claims at
  -- once could split one tag's rows into two deliveries. The lock is held until the claim's
  -- transaction ends (milliseconds); deliveries to the sinks run in parallel, outside it.
  -- (Per-tag advisory locks would fill the shared lock table: a batch may hold 10,000 tags.)
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('steward:claim_invalidations', 0));
  -- The clock, not now(): the transaction may have waited for the lock, and rows committed
  -- meanwhile carry their writers' (later) now() as deliver_at; compared with our start they
  -- would look debounced, and a tag written all the time would never be due. The claim's next
  -- statements take new snapshots: they see what the claim before this one committed.
  return pg_catalog.clock_timestamp();
end
$$;
comment on function steward.claim_turn() is
  'Internal to the claims: waits for the claim lock (claims take turns; held until the transaction ends) and returns the time rows count as due at.';

create function steward.take_invalidations(max integer, visibility interval)
returns table (id bigint, tag text, attempts integer)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
as $$
#variable_conflict use_column
declare
  moment timestamptz;
  picked text[];
  drop_ids bigint[];
  fold_ids bigint[];
  fold_enqueued timestamptz[];
  fold_deliver timestamptz[];
  fold_attempts integer[];
  fold_errors text[];
  ready_ids bigint[];
begin
  moment := steward.claim_turn();
  -- The tags at the head of the queue.
  select pg_catalog.array_agg(distinct h.tag) into picked
    from (select i.tag from steward.invalidations i
           where i.deliver_at <= moment
           order by i.deliver_at, i.id
           limit take_invalidations.max) as h;
  if picked is null then
    return;
  end if;
  -- Every claimable row of those tags, folded into the tag's oldest row: the others are
  -- deleted, the oldest carries the first enqueue (max_delay), the latest deliver_at
  -- (debounce, backoff) and the most attempts. A tag whose latest deliver_at is still ahead
  -- is folded and left for later; the others are claimed.
  with locked as (
    select i.id, i.tag, i.enqueued_at, i.deliver_at, i.attempts, i.last_error
      from steward.invalidations i
     where i.tag = any (picked) and (i.claimed_until is null or i.deliver_at <= moment)
       for update of i skip locked
  ), groups as (
    select l.tag,
           pg_catalog.min(l.id) as head,
           pg_catalog.count(*) as rows_folded,
           pg_catalog.min(l.enqueued_at) as enqueued_at,
           pg_catalog.max(l.deliver_at) as deliver_at,
           pg_catalog.max(l.attempts) as attempts,
           (pg_catalog.array_agg(l.last_error order by l.attempts desc, l.id desc)
              filter (where l.last_error is not null))[1] as last_error
      from locked l
     group by l.tag
  )
  select (select pg_catalog.array_agg(l.id) from locked l join groups g on g.tag = l.tag where l.id <> g.head),
         pg_catalog.array_agg(g.head) filter (where g.rows_folded > 1),
         pg_catalog.array_agg(g.enqueued_at) filter (where g.rows_folded > 1),
         pg_catalog.array_agg(g.deliver_at) filter (where g.rows_folded > 1),
         pg_catalog.array_agg(g.attempts) filter (where g.rows_folded > 1),
         pg_catalog.array_agg(g.last_error) filter (where g.rows_folded > 1),
         pg_catalog.array_agg(g.head) filter (where g.deliver_at <= moment)
    into drop_ids, fold_ids, fold_enqueued, fold_deliver, fold_attempts, fold_errors, ready_ids
    from groups g;
  if drop_ids is not null then
    delete from steward.invalidations i where i.id = any (drop_ids);
    update steward.invalidations i
       set enqueued_at = f.enqueued_at, deliver_at = f.deliver_at, attempts = f.attempts,
           last_error = f.last_error, claimed_until = null
      from unnest(fold_ids, fold_enqueued, fold_deliver, fold_attempts, fold_errors)  -- multi-argument unnest: unqualified
           as f(id, enqueued_at, deliver_at, attempts, last_error)
     where i.id = any (fold_ids) and i.id = f.id;
  end if;
  if ready_ids is null then
    return;
  end if;
  return query
  update steward.invalidations i
     set claimed_until = moment + visibility, deliver_at = moment + visibility, attempts = i.attempts + 1
   where i.id = any (ready_ids)
  returning i.id, i.tag, i.attempts;
end
$$;
comment on function steward.take_invalidations(integer, interval) is
  'Internal to claim_invalidations: folds the claimable rows of up to max tags at the head of the queue into each tag''s oldest and claims the tags that are due, one row each.';

create function steward.remove_due_invalidations(max integer, out tags text[], out view_ids bigint[])
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
as $$
declare
  moment timestamptz := steward.claim_turn();
begin
  -- The notify path delivers in this transaction, so it deletes every claimable row of the
  -- tags at the head of the queue at once: tags, sorted, are the due ones to send. A tag not
  -- due yet (debounce, backoff) goes back as one folded row, and so does an mv: tag, for
  -- refresh_from_tags, its attempt counted (view_ids, under the oldest row's id, as a claim
  -- would leave it). Looked up by "= any (array)": one pass over the tag index on
  -- PostgreSQL 17 and later, where the array is sorted.
  with removed as (
    delete from steward.invalidations i
     where i.tag = any (array(select d.tag from steward.invalidations d
                               where d.deliver_at <= moment
                               order by d.deliver_at, d.id
                               limit remove_due_invalidations.max))
       and (i.claimed_until is null or i.deliver_at <= moment)
    returning i.id, i.tag, i.enqueued_at, i.deliver_at, i.attempts, i.last_error
  ), groups as (
    select r.tag,
           pg_catalog.min(r.id) as head,
           pg_catalog.min(r.enqueued_at) as enqueued_at,
           pg_catalog.max(r.deliver_at) as deliver_at,
           pg_catalog.max(r.attempts) as attempts
      from removed r
     group by r.tag
  ), kept as (
    insert into steward.invalidations (id, tag, enqueued_at, deliver_at, attempts, last_error)
    overriding system value
    select g.head, g.tag, g.enqueued_at, g.deliver_at,
           g.attempts + case when g.deliver_at <= moment then 1 else 0 end,
           (select r.last_error from removed r
             where r.tag = g.tag and r.last_error is not null
             order by r.attempts desc, r.id desc limit 1)
      from groups g
     where g.deliver_at > moment or g.tag like 'mv:%'
  )
  select pg_catalog.array_agg(g.tag order by g.tag) filter (where g.tag not like 'mv:%'),
         pg_catalog.array_agg(g.head) filter (where g.tag like 'mv:%')
    into tags, view_ids
    from groups g
   where g.deliver_at <= moment;
end
$$;
comment on function steward.remove_due_invalidations(integer) is
  'Internal to drain_notify: deletes every claimable row of up to max due tags at the head of the queue and returns the due tags (sorted); a tag not due yet goes back as one row, and an mv: tag goes back (its attempt counted) for refresh_from_tags (view_ids).';

create function steward.claim_invalidations(max integer, visibility interval default '60 seconds')
returns table (id bigint, tag text, attempts integer)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
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
  select t.id, t.tag, t.attempts from steward.take_invalidations(claim_invalidations.max, visibility) as t;
end
$$;
comment on function steward.claim_invalidations(integer, interval) is
  'Claims up to max due tags, one row each: every enqueue of a tag committed before the claim is folded into that row. Claims take turns (a lock held for the claim''s transaction), so many drainers share the queue and none gets a tag another holds. An entry not completed or failed within visibility can be claimed again; one claimed invalidations.max_attempts times moves to the dead letters.';

create function steward.complete_invalidations(ids bigint[])
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
as $$
  with done as (
    delete from steward.invalidations i where i.id = any (ids) returning 1
  )
  select pg_catalog.count(*)::integer from done;
$$;
comment on function steward.complete_invalidations(bigint[]) is
  'Records the delivery of claimed entries by deleting them. Returns how many it deleted (entries already gone are ignored). Enqueues of the same tags made after the claim stay pending.';

create function steward.requeue_invalidations(ids bigint[], error text, retry_at timestamptz[], count_attempt boolean)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
as $$
  -- Enqueues of the tag made since the claim stay rows of their own; the next claim folds them
  -- in, and waits for the latest deliver_at, so they wait for this retry too.
  with requeued as (
    update steward.invalidations i
       set claimed_until = null,
           deliver_at = r.retry_at,
           attempts = case when count_attempt then i.attempts else greatest(i.attempts - 1, 0) end,
           last_error = coalesce(error, i.last_error)
      from unnest(ids, retry_at) as r(id, retry_at)  -- multi-argument unnest: FROM-clause syntax, unqualified
     where i.id = any (ids) and i.id = r.id
    returning 1
  )
  select pg_catalog.count(*)::integer from requeued;
$$;
comment on function steward.requeue_invalidations(bigint[], text, timestamptz[], boolean) is
  'Puts claimed entries back in the queue for the given times. Internal to fail_invalidations and release_invalidations.';

create function steward.fail_invalidations(ids bigint[], error text, retry_in interval default null)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
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
  scheduled integer := 0;
begin
  for entry in
    select i.id, i.tag from steward.invalidations i
     where i.id = any (ids) and i.tag like 'mv:%'
     order by i.tag
       for update of i
  loop
    view_name := steward.view_named_by_tag(entry.tag);
    if view_name is null then
      -- The tag names nothing that can be refreshed (it was written behind enqueue's check, or
      -- its view was unregistered since): no retry can help.
      perform steward.dead_letter_invalidations(array[entry.id],
        pg_catalog.format('%s names no registered materialized view (mv:<schema>.<view>)', entry.tag));
      continue;
    end if;
    -- Whatever goes wrong with one entry fails that entry alone (its attempt counts, and it
    -- goes to the dead letters after max_attempts); the others are still handled.
    begin
      perform steward.schedule_refresh(view_name::regclass);
      delete from steward.invalidations i where i.id = entry.id;
      scheduled := scheduled + 1;
    exception when others then
      perform steward.fail_invalidations(array[entry.id], pg_catalog.format('%s: %s', entry.tag, sqlerrm));
    end;
  end loop;
  return scheduled;
end
$$;
comment on function steward.refresh_from_tags(bigint[]) is
  'Handles claimed mv:<schema>.<view> entries among ids: schedules a refresh of each view (steward.schedule_refresh, debounced and deduplicated there) and deletes the entry; a tag naming no registered materialized view goes to the dead letters, and an entry whose refresh cannot be scheduled fails alone (retried, dead letters after max_attempts). Never raises for one entry. Returns how many refreshes it scheduled.';

create function steward.drain_notify(max integer, channel text)
returns table (delivered integer, refreshes integer, failed integer)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  view_ids bigint[];
  tags text[];
  tag text;
  piece text;
  pieces text[] := '{}';
  payload_bytes integer := 0;
begin
  if drain_notify.max is null or drain_notify.max < 1 or drain_notify.max > 10000 then
    raise exception 'max must be from 1 to 10000, got %', coalesce(drain_notify.max::text, 'null') using errcode = '22023';
  end if;
  if channel is null or channel = '' then
    raise exception 'channel must be a non-empty string' using errcode = '22023';
  end if;
  select r.tags, r.view_ids into tags, view_ids from steward.remove_due_invalidations(drain_notify.max) as r;
  delivered := coalesce(pg_catalog.cardinality(tags), 0);
  refreshes := 0;
  failed := 0;
  if view_ids is not null then
    refreshes := steward.refresh_from_tags(view_ids);
    failed := pg_catalog.cardinality(view_ids) - refreshes;
  end if;
  if tags is null then
    return next;
    return;
  end if;
  -- JSON arrays of tags, each under pg_notify's 8000-byte payload limit. The pieces are
  -- gathered in an array and joined once per payload (appending to a string copies it).
  foreach tag in array tags loop
    piece := pg_catalog.to_json(tag)::text;
    if payload_bytes > 0 and payload_bytes + pg_catalog.octet_length(piece) + 1 > 7999 then
      perform pg_catalog.pg_notify(channel, '[' || pg_catalog.array_to_string(pieces, ',') || ']');
      pieces := '{}';
      payload_bytes := 0;
    end if;
    pieces := pieces || piece;
    payload_bytes := payload_bytes + pg_catalog.octet_length(piece) + 1;
  end loop;
  perform pg_catalog.pg_notify(channel, '[' || pg_catalog.array_to_string(pieces, ',') || ']');
  return next;
end
$$;
comment on function steward.drain_notify(integer, text) is
  'Delivers up to max due tags to the notify sink in one transaction: they are sent with pg_notify on channel as JSON arrays (each under 8000 bytes) and their entries deleted, so the notifications go out exactly when the deletion commits. mv: tags schedule refreshes instead; an mv: entry that fails does so alone (failed counts them). The drainer uses it when notify is the only sink.';

create function steward.next_invalidation_due()
returns timestamptz
language sql
stable
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
as $$
  select pg_catalog.min(i.deliver_at) from steward.invalidations i
$$;
comment on function steward.next_invalidation_due() is
  'When the next entry may be claimed (due, or its claim expires); null when the queue is empty. The drainer sleeps until then.';

-- The queue's state: for the drainer, status, health and /metrics ------------------------------

create function steward.invalidation_states()
returns table (state text, entries bigint, oldest_enqueued_at timestamptz)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select s.state, coalesce(c.entries, 0), c.oldest_enqueued_at
    from (values ('ready'), ('scheduled'), ('claimed')) as s(state)
    left join (
      select case when p.deliver_at > pg_catalog.now() then 'scheduled' else 'ready' end as state,
             pg_catalog.count(*) as entries, pg_catalog.min(p.enqueued_at) as oldest_enqueued_at
        from steward.pending_invalidations p
       group by 1
      union all
      select 'claimed', pg_catalog.count(*), pg_catalog.min(i.enqueued_at)
        from steward.invalidations i
       where i.claimed_until > pg_catalog.now()) as c on c.state = s.state
$$;
comment on function steward.invalidation_states() is
  'Undelivered invalidation entries (one per tag while pending, as steward.pending_invalidations folds them; one per claim in flight) by state, every state always present: ready (due and unclaimed, or its claim expired), scheduled (debounced or backing off after a failure), claimed (being delivered); with the oldest entry''s first enqueue. The one definition of these states, for status, health and /metrics.';

create function steward.invalidation_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with p as (select * from steward.invalidation_states())
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
