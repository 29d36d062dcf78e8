--! Previous: sha1:6540f43d897f074a51b5db4af7d1a39e7b8c21c1
--! Hash: sha1:66a81a0de72daffa6a1f87f720b4338dfb377e45
--! Message: tracking-triggers

-- Tracking triggers, second version: no write waits on, fails because of, or runs code through
-- its tags.
--
-- * The trigger enqueues in its own statement instead of calling steward.enqueue_invalidations:
--   that call was a second security-definer function (a second search_path switch, a second
--   plpgsql frame) in every tracked write (fixed-tag tables: 111-154 us per single-row update
--   before, 98-112 after, on PostgreSQL 15).
-- * The trigger is security definer (it writes the queue, which writers of a tracked table may
--   not). It rendered placeholder values with to_jsonb, which calls a cast to json (and to text)
--   that the owner of a user-defined type may create: the owner of a tracked table could add a
--   column of an enum of theirs with such a cast and have it run as the steward owner, on every
--   write. Now a table whose columns are all of built-in types keeps the fast path (to_jsonb calls
--   no cast for built-in types); a table with any other column type (enums, domains, composites,
--   extension types) gets its tags from steward.safe_tag_query, which renders such a value with
--   its type's output function (format('%s'), which only superusers can write) and never
--   converts a column the tags do not use. The column types are read at every statement:
--   ALTER TABLE cannot change them while the statement runs.
-- * A placeholder value can make a tag longer than the queue's 1000 characters. The first
--   version let the queue's check constraint fail the user's write; now the statement's
--   over-long tags become one dead letter saying how many (one per tag would let a writer make
--   thousands with one insert), and the write and its other tags go through.

create or replace function steward.safe_tag_query(target regclass, templates jsonb, reads text)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  template record;
  column_name text;
  column_type oid;
  base_type oid;
  renders text[];
  conditions text[];
  pieces text[] := '{}';
  complete boolean;
  changed text;
begin
  changed := case reads when 'new' then 'new_rows' when 'old' then 'old_rows'
             else '(select * from old_rows union all select * from new_rows)' end;
  for template in
    select t.format, t.column_names from pg_catalog.jsonb_to_recordset(templates) as t(format text, column_names text[])
  loop
    renders := '{}';
    conditions := '{}';
    complete := true;
    foreach column_name in array template.column_names loop
      select a.atttypid into column_type
        from pg_catalog.pg_attribute a
       where a.attrelid = target and a.attname = column_name and a.attnum > 0 and not a.attisdropped;
      if not found then
        -- Dropped or renamed since track_table: the template yields no tag, as for a null value.
        complete := false;
        exit;
      end if;
      base_type := column_type;
      while (select t.typtype from pg_catalog.pg_type t where t.oid = base_type) = 'd' loop
        select t.typbasetype into base_type from pg_catalog.pg_type t where t.oid = base_type;
      end loop;
      -- Built-in types render as to_jsonb renders them (as the fast path does); a domain over
      -- one is cast to it first (a cast from a domain is never a user's function). Any other
      -- type renders through its output function: no cast is looked up.
      renders := renders || case
        when base_type < 16384::oid and base_type = column_type then
          pg_catalog.format('(pg_catalog.to_jsonb(changed.%I) #>> ''{}'')', column_name)
        when base_type < 16384::oid then
          pg_catalog.format('(pg_catalog.to_jsonb(changed.%I::%s) #>> ''{}'')', column_name,
                            pg_catalog.format_type(base_type, null))
        else pg_catalog.format('pg_catalog.format(''%%s'', changed.%I)', column_name) end;
      conditions := conditions || pg_catalog.format('changed.%I is not null', column_name);
    end loop;
    if complete then
      -- The text of each row, then distinct: a value needs no equality operator of its type.
      pieces := pieces || pg_catalog.format(
        'select pg_catalog.format(%L, variadic array[%s]::text[]) as tag from %s as changed where %s',
        template.format, pg_catalog.array_to_string(renders, ', '), changed,
        pg_catalog.array_to_string(conditions, ' and '));
    end if;
  end loop;
  if pg_catalog.cardinality(pieces) = 0 then
    return 'select null::text[]';
  end if;
  return 'select pg_catalog.array_agg(distinct tags.tag) from (' || pg_catalog.array_to_string(pieces, ' union all ')
         || ') as tags';
end
$$;
comment on function steward.safe_tag_query(regclass, jsonb, text) is
  'Internal to the tracking trigger: the query (over the statement''s transition tables: reads is new, old, or old and new) that fills the table''s tag templates without converting any value through a cast a user may have written: built-in types as to_jsonb renders them, other types through their output functions. Used for tables with a column of a type that is not built in.';

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
    if exists (select from pg_catalog.pg_attribute a
                where a.attrelid = tg_relid and a.attnum > 0 and not a.attisdropped and a.atttypid >= 16384::oid) then
      -- A column of a type that is not built in: its casts may be its owner's code, which must
      -- not run with our rights (see the header). Rendered without casts, whatever the size.
      tag_query := steward.safe_tag_query(tg_relid, templates, reads);
      reads := null;
    -- A few rows (most statements): the fixed tags and the templates filled row by row, in a
    -- statement planned once per table; no row changed gives no tag. Many rows: the query
    -- track_table wrote for the event takes the distinct column values first (a 100,000-row
    -- statement touching 10 providers builds 10 strings). (Each statement names only the
    -- transition tables this trigger has: one naming another could not even be planned.)
    elsif reads = 'new' then
      if not exists (select from new_rows offset 16) then
        select pg_catalog.array_agg(distinct t.tag) into tags
          from new_rows as r
         cross join lateral (
           select s.tag from pg_catalog.unnest(static_tags) as s(tag)
            union all
           select f.tag from steward.fill_templates(templates, pg_catalog.to_jsonb(r)) as f(tag)) as t;
        reads := 'done';
      end if;
    elsif reads = 'old' then
      if not exists (select from old_rows offset 16) then
        select pg_catalog.array_agg(distinct t.tag) into tags
          from old_rows as r
         cross join lateral (
           select s.tag from pg_catalog.unnest(static_tags) as s(tag)
            union all
           select f.tag from steward.fill_templates(templates, pg_catalog.to_jsonb(r)) as f(tag)) as t;
        reads := 'done';
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
      reads := 'done';
    end if;
    if reads is distinct from 'done' then
      if tag_query is null then
        select case tg_op when 'INSERT' then t.tags_on_insert when 'UPDATE' then t.tags_on_update else t.tags_on_delete end
          into tag_query
          from steward.tracked_tables t where t.target = tg_relid;
        if tag_query is null then
          return null;
        end if;
        reads := tg_argv[2];
      end if;
      execute tag_query into row_tags;
      any_rows := row_tags is not null;
      -- Fixed tags need only know whether the statement changed any row.
      if not any_rows and pg_catalog.cardinality(static_tags) > 0 then
        execute case tg_argv[2] when 'old' then 'select exists (select from old_rows)' else 'select exists (select from new_rows)' end
          into any_rows;
      end if;
      if any_rows then
        tags := static_tags || coalesce(row_tags, '{}');
      end if;
    end if;
    -- A tag the queue cannot hold (a long placeholder value) must not fail the write: the
    -- statement's over-long tags become one dead letter saying how many, and the other tags are
    -- enqueued. (Fixed tags were checked by track_table.) It cannot be replayed: no tag fits.
    if exists (select from pg_catalog.unnest(tags) as u(tag) where pg_catalog.length(u.tag) > 1000) then
      insert into steward.dead_letters
        (source, task_identifier, payload, attempts, max_attempts, last_error, is_permanent, failed_at)
      select 'invalidation', 'drain_invalidations',
             pg_catalog.jsonb_build_object('table', tg_relid::regclass::text, 'tags_too_long', pg_catalog.count(*),
                                           'first_tag_prefix', pg_catalog.left(pg_catalog.min(l.tag), 200)),
             0, steward.setting_integer('invalidations.max_attempts'),
             pg_catalog.format('a write to %s made %s tag(s) longer than the queue''s 1000 characters (the longest %s); they were not enqueued',
                               tg_relid::regclass, pg_catalog.count(*), pg_catalog.max(pg_catalog.length(l.tag))),
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
  'Statement-level trigger of tracked tables: computes the distinct tags of the changed rows from the transition tables and enqueues each once (a table with fixed tags only has no transition tables and enqueues them for every statement). Never runs code of the table''s owner: values of types that are not built in are rendered without casts (steward.safe_tag_query). A statement''s tags longer than the queue''s 1000 characters become one permanent dead letter instead of failing the write.';

revoke all on function steward.safe_tag_query(regclass, jsonb, text) from public;
