--! Previous: sha1:c0b02553361f84f2be8371e0f599579f28762146
--! Hash: sha1:7e6773d0d3cd45accf9cac666001637eac06fac3
--! Message: invalidation queue

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
-- Plans: functions that look rows up in the queue run with plan_cache_mode = force_custom_plan.
-- The queue is often empty for hours and then holds a million rows; a generic plan cached while
-- it was empty scans it whole (a sequential scan per claimed batch, per enqueue) once it grows.

insert into steward.settings (name, value, type, description) values
  ('invalidations.max_delay', '1 minute', 'interval',
   'Debounce never delays a tag past its first enqueue plus this.'),
  ('invalidations.max_attempts', '10', 'integer',
   'Deliveries tried before an entry moves to the dead letters.'),
  ('invalidations.backoff_base', '1 second', 'interval',
   'First retry delay after a failed delivery; doubles per attempt, with jitter.'),
  ('invalidations.backoff_max', '10 minutes', 'interval',
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
  'Cache-invalidation queue: undelivered rows only (completion deletes). Each enqueue appends a row; a claim folds the pending rows of a tag into one (see steward.pending_invalidations for one row per tag). Use the functions, not the table.';
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
  target         regclass primary key,
  tags           text[] not null,
  static_tags    text[] not null,
  tags_on_insert text,
  tags_on_update text,
  tags_on_delete text,
  old_row_tags   jsonb,
  tracked_at     timestamptz not null default pg_catalog.now()
);
comment on table steward.tracked_tables is
  'Tables whose writes enqueue invalidation tags (track_table). static_tags have no placeholder; tags_on_insert, tags_on_update and tags_on_delete are the queries (over the statement''s transition tables) yielding the distinct tags with {column} placeholders filled, null when no tag has a placeholder (the triggers then capture no rows). old_row_tags: the templates the row trigger steward_invalidate_update_old fills from the old row when an update changes a placeholder column, null when there is no such trigger.';

-- Enqueueing ------------------------------------------------------------------------------------

create function steward.wake_drainers()
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
begin
  -- NOTIFY makes committing transactions queue on one global lock, so a NOTIFY per enqueue
  -- caps enqueue throughput. A drainer drains until nothing is due, so it needs waking only
  -- when nothing was due before this transaction's entries. (A missed wake costs at most the
  -- drainer's poll interval.) Called once per transaction, before its first due entry.
  perform pg_catalog.set_config('steward.drainers_woken', 'on', true);
  if not exists (select from steward.invalidations i where i.deliver_at <= pg_catalog.now()) then
    perform pg_catalog.pg_notify('steward_invalidations', '');
  end if;
end
$$;
comment on function steward.wake_drainers() is
  'Sends NOTIFY steward_invalidations unless entries are already due (a drainer is then at work). Internal to the enqueue functions, once per transaction.';

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
  appended integer;
begin
  if wait <= '0 seconds' then
    if pg_catalog.current_setting('steward.drainers_woken', true) is distinct from 'on' then
      perform steward.wake_drainers();
    end if;
    -- One row per distinct tag, appended: nothing here waits for another transaction.
    insert into steward.invalidations (tag, deliver_at)
    select distinct u.tag, pg_catalog.now()
      from pg_catalog.unnest(enqueue_invalidations.tags) as u(tag)
     where u.tag is not null and u.tag <> '';
  else
    -- A debounce pushes the tag's delivery back (a tag is due when its latest row is), but never
    -- past the first enqueue of its pending entry plus max_delay. Such rows are not due now, so
    -- no drainer needs waking: the drainer's poll finds them. EXECUTE: planned for the queue's
    -- size of the moment (see the header).
    execute
      'insert into steward.invalidations (tag, enqueued_at, deliver_at)
       select t.tag, pg_catalog.now(),
              least(pg_catalog.now() + $2, coalesce(f.first_enqueued_at, pg_catalog.now()) + $3)
         from (select distinct u.tag from pg_catalog.unnest($1) as u(tag) where u.tag is not null and u.tag <> '''') as t
         left join lateral (
           select pg_catalog.min(p.enqueued_at) as first_enqueued_at
             from steward.invalidations p
            where p.tag = t.tag and p.claimed_until is null) as f on true'
      using enqueue_invalidations.tags, wait, max_delay;
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
set plan_cache_mode = force_custom_plan
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
  if tag_query is null then
    -- Fixed tags only: the trigger captures no rows (that would cost more than all the rest),
    -- so it cannot tell a statement that changed no row, and enqueues them anyway.
    perform steward.enqueue_invalidations(spec.static_tags);
    return null;
  end if;
  execute tag_query into row_tags;
  any_rows := row_tags is not null;
  -- Fixed tags need only know whether the statement changed any row.
  if not any_rows and pg_catalog.cardinality(spec.static_tags) > 0 then
    execute case tg_op when 'DELETE' then 'select exists (select from old_rows)'
                       else 'select exists (select from new_rows)' end
      into any_rows;
  end if;
  if any_rows then
    perform steward.enqueue_invalidations(spec.static_tags || coalesce(row_tags, '{}'));
  end if;
  return null;
end
$$;
comment on function steward.invalidate_from_statement() is
  'Statement-level trigger of tracked tables: computes the distinct tags of the changed rows from the transition tables and enqueues each once; a table with fixed tags only has no transition tables and enqueues them for every statement.';

create function steward.invalidate_from_old_row()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  old_values jsonb := pg_catalog.to_jsonb(old);
  row_tags text[];
begin
  -- tg_argv[0], written by track_table: [{"format": "product:%s", "column_names": ["id"]}, ...].
  -- Values render as in to_jsonb, as the statement trigger renders them.
  select pg_catalog.array_agg(pg_catalog.format(t.format, variadic v.tag_values))
    into row_tags
    from pg_catalog.jsonb_to_recordset(tg_argv[0]::jsonb) as t(format text, column_names text[])
   cross join lateral (
     select pg_catalog.array_agg(old_values ->> c.name order by c.n) as tag_values,
            pg_catalog.bool_and(old_values ->> c.name is not null) as is_complete
       from pg_catalog.unnest(t.column_names) with ordinality as c(name, n)) as v
   where v.is_complete;
  if row_tags is not null then
    perform steward.enqueue_invalidations(row_tags);
  end if;
  return null;
end
$$;
comment on function steward.invalidate_from_old_row() is
  'Row-level trigger of tracked tables (steward_invalidate_update_old): fires only for rows whose placeholder columns an update changed, and enqueues the tags of the old values. Saves every other update from capturing its old rows.';

-- How a placeholder value becomes text in a tag: as to_jsonb renders it (booleans true/false,
-- timestamps in ISO 8601), because the row trigger reads old values through to_jsonb(old).
-- For the types whose text is the same either way, the cast is cheaper.
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
  old_row_tags jsonb := '[]';
  changed text;
  update_columns text;
  update_condition text;
  queries text[] := array[null, null, null];
  event integer;
  is_partitioned boolean;
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
  is_partitioned := relation.relkind = 'p';
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
    old_row_tags := old_row_tags || pg_catalog.jsonb_build_array(
      pg_catalog.jsonb_build_object('format', template_format, 'column_names', template_columns));
    -- Distinct column values first, then the text: a 100,000-row statement touching 10
    -- providers builds 10 strings, not 100,000. An update reads its new rows only: the old
    -- values differ only where it changed a placeholder column, and the row trigger
    -- steward_invalidate_update_old enqueues those. A partitioned table is the exception: an
    -- update moving a row to another partition fires no row-level update trigger.
    for event in 1..3 loop
      changed := case when event = 1 then 'new_rows'
                      when event = 2 and is_partitioned then '(select * from old_rows union all select * from new_rows)'
                      when event = 2 then 'new_rows'
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
  if pg_catalog.cardinality(placeholder_columns) = 0 or is_partitioned then
    old_row_tags := null;
  end if;

  insert into steward.tracked_tables as t (target, tags, static_tags, tags_on_insert, tags_on_update, tags_on_delete, old_row_tags)
  values (target, tags, static, queries[1], queries[2], queries[3], old_row_tags)
  on conflict on constraint tracked_tables_pkey do update
    set tags = excluded.tags, static_tags = excluded.static_tags, tags_on_insert = excluded.tags_on_insert,
        tags_on_update = excluded.tags_on_update, tags_on_delete = excluded.tags_on_delete,
        old_row_tags = excluded.old_row_tags, tracked_at = pg_catalog.now();

  execute pg_catalog.format('drop trigger if exists steward_invalidate_insert on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_update on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_update_old on %s', target);
  execute pg_catalog.format('drop trigger if exists steward_invalidate_delete on %s', target);
  if queries[1] is null then
    -- Fixed tags only: nothing to read from the rows, so no transition tables to capture.
    execute pg_catalog.format(
      'create trigger steward_invalidate_insert after insert on %s '
      'for each statement execute function steward.invalidate_from_statement()', target);
    execute pg_catalog.format(
      'create trigger steward_invalidate_update after update on %s '
      'for each statement execute function steward.invalidate_from_statement()', target);
    execute pg_catalog.format(
      'create trigger steward_invalidate_delete after delete on %s '
      'for each statement execute function steward.invalidate_from_statement()', target);
  else
    -- One trigger per event: a trigger with transition tables may fire on one event only.
    execute pg_catalog.format(
      'create trigger steward_invalidate_insert after insert on %s referencing new table as new_rows '
      'for each statement execute function steward.invalidate_from_statement()', target);
    execute pg_catalog.format(
      'create trigger steward_invalidate_update after update on %s referencing %s new table as new_rows '
      'for each statement execute function steward.invalidate_from_statement()',
      target, case when is_partitioned then 'old table as old_rows' else '' end);
    execute pg_catalog.format(
      'create trigger steward_invalidate_delete after delete on %s referencing old table as old_rows '
      'for each statement execute function steward.invalidate_from_statement()', target);
  end if;
  if old_row_tags is not null then
    -- Transition tables cannot go with a column list, so the old values an update changed come
    -- from a row-level trigger that fires only for those rows (WHEN is evaluated in C per row).
    select pg_catalog.string_agg(pg_catalog.format('%I', c), ', '),
           pg_catalog.string_agg(pg_catalog.format('old.%1$I is distinct from new.%1$I', c), ' or ')
      into update_columns, update_condition
      from pg_catalog.unnest(placeholder_columns) as c;
    execute pg_catalog.format(
      'create trigger steward_invalidate_update_old after update of %s on %s '
      'for each row when (%s) execute function steward.invalidate_from_old_row(%L)',
      update_columns, target, update_condition, old_row_tags::text);
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
  execute pg_catalog.format('drop trigger if exists steward_invalidate_update_old on %s', target);
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

-- Delivering -----------------------------------------------------------------------------------

create function steward.dead_letter_invalidations(ids bigint[], error text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
declare
  moved integer;
begin
  with gone as (
    delete from steward.invalidations i
     using pg_catalog.unnest(dead_letter_invalidations.ids) as d(id)
     where i.id = d.id
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

create function steward.take_invalidations(max integer, visibility interval)
returns table (id bigint, tag text, attempts integer)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
declare
  picked text[];
  moment timestamptz;
begin
  -- Claims take turns: a claim folds all the claimable rows of its tags, and two claims at
  -- once could split one tag's rows into two deliveries. The lock is held for the claim's
  -- transaction (milliseconds); deliveries to the sinks run in parallel, outside it. (Per-tag
  -- advisory locks would fill the shared lock table: a batch may hold 10,000 tags.)
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('steward:claim_invalidations', 0));
  -- The clock, not now(): the transaction may have waited for the lock, and rows committed
  -- meanwhile carry their writers' (later) now() as deliver_at; compared with our start they
  -- would look debounced, and a tag written all the time would never be due.
  moment := pg_catalog.clock_timestamp();
  -- The tags at the head of the queue (a new statement, so it sees what the claim before this
  -- one committed).
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
  -- is folded and left for later; the others are returned (and claimed, given a visibility).
  return query
  with locked as (
    select i.id, i.tag, i.enqueued_at, i.deliver_at, i.attempts, i.last_error
      from pg_catalog.unnest(picked) as p(tag)
      join steward.invalidations i on i.tag = p.tag
     where i.claimed_until is null or i.deliver_at <= moment
       for update of i skip locked
  ), groups as (
    select l.tag,
           pg_catalog.min(l.id) as head,
           pg_catalog.count(*) as rows_folded,
           pg_catalog.min(l.enqueued_at) as enqueued_at,
           pg_catalog.max(l.deliver_at) as deliver_at,
           pg_catalog.max(l.attempts) as attempts,
           (pg_catalog.array_agg(l.last_error order by l.attempts desc, l.id desc)
              filter (where l.last_error is not null))[1] as last_error,
           pg_catalog.max(l.deliver_at) <= moment as is_ready
      from locked l
     group by l.tag
  ), dropped as (
    delete from steward.invalidations i
     using locked l join groups g on g.tag = l.tag
     where i.id = l.id and l.id <> g.head
  ), heads as (
    update steward.invalidations i
       set enqueued_at = g.enqueued_at,
           deliver_at = case when g.is_ready and visibility is not null then moment + visibility
                             else g.deliver_at end,
           claimed_until = case when g.is_ready and visibility is not null then moment + visibility end,
           attempts = g.attempts + case when g.is_ready and visibility is not null then 1 else 0 end,
           last_error = g.last_error
      from groups g
     where i.id = g.head and (g.rows_folded > 1 or (g.is_ready and visibility is not null))
    returning i.id, i.attempts
  )
  select g.head, g.tag, coalesce(h.attempts, g.attempts)
    from groups g left join heads h on h.id = g.head
   where g.is_ready
   order by g.deliver_at, g.head;
end
$$;
comment on function steward.take_invalidations(integer, interval) is
  'Internal to claim_invalidations and drain_notify: takes the claim lock, folds the claimable rows of up to max tags at the head of the queue into each tag''s oldest and returns the tags that are due, one row each, locked until the transaction ends; with a visibility, claims them.';

create function steward.claim_invalidations(max integer, visibility interval default '60 seconds')
returns table (id bigint, tag text, attempts integer)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
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
set plan_cache_mode = force_custom_plan
as $$
  with done as (
    delete from steward.invalidations i using pg_catalog.unnest(ids) as d(id) where i.id = d.id returning 1
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
set plan_cache_mode = force_custom_plan
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
     where i.id = r.id
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
set plan_cache_mode = force_custom_plan
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
    join (select distinct d.id from pg_catalog.unnest(ids) as d(id)) as d on d.id = i.id;
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
set plan_cache_mode = force_custom_plan
as $$
declare
  entry record;
  view_name text;
  scheduled integer := 0;
begin
  for entry in
    select i.id, i.tag from steward.invalidations i
      join (select distinct d.id from pg_catalog.unnest(ids) as d(id)) as d on d.id = i.id
     where i.tag like 'mv:%'
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
set plan_cache_mode = force_custom_plan
as $$
declare
  view_ids bigint[];
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
  select pg_catalog.array_agg(t.id) filter (where t.tag like 'mv:%'),
         pg_catalog.array_agg(t.id) filter (where t.tag not like 'mv:%'),
         pg_catalog.array_agg(t.tag order by t.tag) filter (where t.tag not like 'mv:%')
    into view_ids, tag_ids, tags
    from steward.take_invalidations(drain_notify.max, null) as t;
  delivered := coalesce(pg_catalog.cardinality(tag_ids), 0);
  refreshes := 0;
  failed := 0;
  if view_ids is not null then
    -- This pass is a delivery attempt for them, as a claim is.
    update steward.invalidations i set attempts = i.attempts + 1
      from pg_catalog.unnest(view_ids) as v(id) where i.id = v.id;
    refreshes := steward.refresh_from_tags(view_ids);
    failed := pg_catalog.cardinality(view_ids) - refreshes;
  end if;
  if tag_ids is null then
    return next;
    return;
  end if;
  delete from steward.invalidations i using pg_catalog.unnest(tag_ids) as d(id) where i.id = d.id;
  -- JSON arrays of tags, each under pg_notify's 8000-byte payload limit.
  foreach tag in array tags loop
    piece := pg_catalog.to_json(tag)::text;
    if payload <> '' and pg_catalog.octet_length(payload) + pg_catalog.octet_length(piece) + 3 > 7999 then
      perform pg_catalog.pg_notify(channel, '[' || payload || ']');
      payload := '';
    end if;
    payload := case when payload = '' then piece else payload || ',' || piece end;
  end loop;
  perform pg_catalog.pg_notify(channel, '[' || payload || ']');
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
set plan_cache_mode = force_custom_plan
as $$
  select pg_catalog.min(i.deliver_at) from steward.invalidations i
$$;
comment on function steward.next_invalidation_due() is
  'When the next entry may be claimed (due, or its claim expires); null when the queue is empty. The drainer sleeps until then.';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function steward.enqueue_invalidation(text, interval) to steward_client;
