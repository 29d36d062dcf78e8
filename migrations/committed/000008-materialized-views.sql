--! Previous: sha1:3f56f8ba045e0902f51846ec479d956251af7f06
--! Hash: sha1:72d49a4f12fff68f5d2112c9f7ccb5f32e3c2cfb
--! Message: materialized views

-- Materialized views: the registry of views pg-steward refreshes (one refresh per view at a time,
-- in dependency order, every attempt logged). The tasks refresh_materialized_view and
-- schedule_refreshes (tasks/*.ts) call these functions; a DBA may call them too.

-- Settings -------------------------------------------------------------------------------------

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('maintenance.refresh_lock_wait', '10 seconds', 'interval', '0 seconds', '1 hour',
   'How long a refresh waits for another refresh of the same view to end before it is recorded as skipped (0: does not wait).'),
  ('maintenance.refresh_lock_timeout', '5 seconds', 'interval', '1 millisecond', '1 hour',
   'lock_timeout of a refresh: how long it waits for a table lock. A plain refresh queued behind a long reader would hold up every later reader, so keep it short.'),
  ('maintenance.refresh_statement_timeout', '30 minutes', 'interval', '1 millisecond', '7 days',
   'statement_timeout of a refresh: a refresh that runs longer fails (logged) and is retried.'),
  ('maintenance.refresh_max_attempts', '5', 'integer', '1', '1000',
   'Attempts of a refresh job enqueued by schedule_refresh before it fails for good.'),
  ('maintenance.refresh_log_retention', '30 days', 'interval', '1 hour', '3650 days',
   'How long rows of steward.refresh_log are kept (removed by the cleanup task).')
on conflict (name) do nothing;

-- Materialized views: registry and log ---------------------------------------------------------
-- No column is named with an SQL keyword a DBA would have to quote (CONCURRENTLY is one): the
-- registry says refresh_concurrently, the log ran_concurrently.

create table steward.materialized_views (
  view              text primary key,
  refresh_every     interval check (refresh_every > interval '0'),
  refresh_concurrently boolean not null default true,
  debounce          interval not null default '30 seconds' check (debounce >= interval '0'),
  registered_at     timestamptz not null default pg_catalog.now(),
  last_enqueued_at  timestamptz,
  last_started_at   timestamptz,
  last_refreshed_at timestamptz
);
comment on table steward.materialized_views is
  'Materialized views pg-steward refreshes, by schema-qualified name (so a registration survives the drop and re-create of its view, as in graphile-migrate watch). Change with steward.register_materialized_view / unregister_materialized_view.';
comment on column steward.materialized_views.view is 'Schema-qualified name, quoted where needed (format(''%I.%I'')).';
comment on column steward.materialized_views.refresh_every is 'schedule_refreshes enqueues a refresh when this long has passed since the last one started or was enqueued; null: only on demand (schedule_refresh, steward run).';
comment on column steward.materialized_views.refresh_concurrently is 'Refresh with REFRESH ... CONCURRENTLY (readers never wait) once the view is populated.';
comment on column steward.materialized_views.debounce is 'Refreshes of the view start at least this far apart; requests in between join the pending one.';
comment on column steward.materialized_views.last_started_at is 'When the last refresh that ran (ok or failed) took the view''s lock.';
comment on column steward.materialized_views.last_refreshed_at is 'When the last successful refresh started: the view''s data is at least this fresh.';

create table steward.refresh_log (
  id           bigint generated always as identity primary key,
  view         text not null,
  started_at   timestamptz not null,
  finished_at  timestamptz not null,
  duration_ms  double precision not null,
  waited_ms    double precision not null default 0,
  ran_concurrently boolean,
  status       text not null check (status in ('ok', 'failed', 'skipped')),
  error        text
);
create index refresh_log_view_started_at_idx on steward.refresh_log (view, started_at);
create index refresh_log_started_at_idx on steward.refresh_log (started_at);
comment on table steward.refresh_log is
  'One row per refresh attempt: ok, failed (error says why) or skipped (another refresh of the view was running).';
comment on column steward.refresh_log.duration_ms is 'From started_at to finished_at, including waited_ms.';
comment on column steward.refresh_log.waited_ms is 'Time spent waiting for another refresh of the same view to end.';
comment on column steward.refresh_log.ran_concurrently is 'Whether REFRESH ... CONCURRENTLY was used (null when skipped).';

-- The key of the advisory lock a refresh of `view` holds; a DBA's own script can take the same
-- lock to keep out of the way: select pg_advisory_lock(steward.refresh_lock_key('public.x')).
create function steward.refresh_lock_key(view text)
returns bigint
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$ select pg_catalog.hashtextextended('steward:refresh:' || view, 0) $$;
comment on function steward.refresh_lock_key(text) is
  'The advisory lock key (transaction-level, bigint form) a refresh of the named view holds.';

create function steward.relation_kind_name(kind "char")
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case kind when 'r' then 'a table' when 'p' then 'a partitioned table' when 'v' then 'a view'
                   when 'm' then 'a materialized view' when 'f' then 'a foreign table'
                   when 'i' then 'an index' when 'I' then 'a partitioned index' when 'S' then 'a sequence'
                   when 'c' then 'a composite type' when 't' then 'a TOAST table'
                   else pg_catalog.format('of relkind %s', kind) end
$$;
comment on function steward.relation_kind_name("char") is
  'pg_class.relkind in words (''a view''), for error messages.';

create function steward.materialized_view_name(target regclass)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  kind "char";
  result text;
begin
  if target is null then
    raise exception 'the materialized view must not be null' using errcode = '22004';
  end if;
  select c.relkind, pg_catalog.format('%I.%I', n.nspname, c.relname) into kind, result
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.oid = target;
  if not found then
    raise exception 'relation with oid % does not exist', target::oid using errcode = '22023';
  end if;
  if kind <> 'm' then
    raise exception '% is not a materialized view (it is %)', result, steward.relation_kind_name(kind)
      using errcode = '22023',
            hint = case when kind = 'v' then 'A plain view is always current; pg-steward refreshes materialized views only.'
                        else 'Give the name of a materialized view (create materialized view ... as select ...).' end;
  end if;
  return result;
end
$$;
comment on function steward.materialized_view_name(regclass) is
  'The schema-qualified name of a materialized view, as the registry and refresh_log store it; anything else is an error (SQLSTATE 22023).';

create function steward.concurrent_refresh_index(target regclass)
returns regclass
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- The same test PostgreSQL applies (matview.c, is_usable_unique_index).
  select i.indexrelid::regclass
    from pg_catalog.pg_index i
    join pg_catalog.pg_class ic on ic.oid = i.indexrelid
    join pg_catalog.pg_am am on am.oid = ic.relam
   where i.indrelid = target
     and i.indisunique and i.indimmediate and i.indisvalid
     and am.amname = 'btree'
     and i.indpred is null
     and i.indnatts > 0
     and 0 < all (i.indkey::int2[])
   order by ic.relname
   limit 1
$$;
comment on function steward.concurrent_refresh_index(regclass) is
  'A unique index REFRESH MATERIALIZED VIEW CONCURRENTLY can use on the view (unique, valid, btree, plain columns, no WHERE), or null.';

-- Why REFRESH ... CONCURRENTLY cannot use the view's indexes, and the index to create instead.
create function steward.refresh_index_advice(target regclass, out detail text, out hint text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  view_name text := steward.materialized_view_name(target);
  unusable text;
  columns text;
begin
  select pg_catalog.string_agg(pg_catalog.format('%I (%s)', ic.relname, pg_catalog.concat_ws(', ',
           case when not i.indisunique then 'not unique' end,
           case when i.indpred is not null then 'has a WHERE clause' end,
           case when 0 = any (i.indkey::int2[]) then 'indexes an expression' end,
           case when not i.indisvalid then 'not valid' end,
           case when i.indisunique and not i.indimmediate then 'deferrable' end,
           case when am.amname <> 'btree' then 'not btree' end)), ', ' order by ic.relname)
    into unusable
    from pg_catalog.pg_index i
    join pg_catalog.pg_class ic on ic.oid = i.indexrelid
    join pg_catalog.pg_am am on am.oid = ic.relam
   where i.indrelid = target;
  detail := 'REFRESH ... CONCURRENTLY needs a unique, valid index on plain columns without a WHERE clause. '
    || coalesce('Its indexes: ' || unusable || '.', 'It has no index.');

  -- The guess: a column named id; else every column named *_id (the keys of a typical summary,
  -- and a superset of a key is still unique); else the first column.
  select coalesce(
    (select pg_catalog.quote_ident(a.attname) from pg_catalog.pg_attribute a
      where a.attrelid = target and a.attnum > 0 and not a.attisdropped and a.attname = 'id'),
    (select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by a.attnum) from pg_catalog.pg_attribute a
      where a.attrelid = target and a.attnum > 0 and not a.attisdropped and a.attname like '%\_id'),
    (select pg_catalog.quote_ident(a.attname) from pg_catalog.pg_attribute a
      where a.attrelid = target and a.attnum > 0 and not a.attisdropped order by a.attnum limit 1))
    into columns;
  hint := pg_catalog.format(
    'create unique index on %s (%s); -- %s guessed from the column names: use the columns that identify a row. '
    || 'Or register with concurrently => false (a plain refresh blocks readers while it runs).',
    view_name, columns, columns);
end
$$;
comment on function steward.refresh_index_advice(regclass) is
  'For a view REFRESH ... CONCURRENTLY cannot refresh: which of its indexes are unusable and why (detail), and the create unique index to run (hint).';

create function steward.has_nulls(target regclass, column_name name)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  result boolean;
begin
  execute pg_catalog.format('select exists (select from %s where %I is null)', target, column_name) into result;
  return result;
end
$$;
comment on function steward.has_nulls(regclass, name) is
  'Whether a column of a relation holds a NULL (one scan that stops at the first).';

create function steward.register_materialized_view(
  target regclass,
  refresh_every interval default null,
  concurrently boolean default true,
  debounce interval default '30 seconds'
)
returns steward.materialized_views
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  view_name text := steward.materialized_view_name(target);
  usable regclass;
  advice record;
  is_populated boolean;
  null_keys text;
  registration steward.materialized_views;
begin
  if refresh_every is not null and refresh_every <= interval '0' then
    raise exception 'refresh_every must be a positive interval or null, got %', refresh_every
      using errcode = '22023', hint = 'null registers the view for refreshes on demand only.';
  end if;
  if register_materialized_view.concurrently is null then
    raise exception 'concurrently must be true or false, not null' using errcode = '22004';
  end if;
  if debounce is null or debounce < interval '0' then
    raise exception 'debounce must be an interval of zero or more, got %', coalesce(debounce::text, 'null')
      using errcode = '22023';
  end if;
  select c.relispopulated into is_populated from pg_catalog.pg_class c where c.oid = target;

  if register_materialized_view.concurrently then
    usable := steward.concurrent_refresh_index(target);
    if usable is null then
      select * into advice from steward.refresh_index_advice(target);
      raise exception 'materialized view % has no unique index REFRESH ... CONCURRENTLY can use', view_name
        using errcode = '22023', detail = advice.detail, hint = advice.hint;
    end if;
    -- Rows whose key holds a NULL never match in the concurrent diff: every refresh deletes and
    -- re-inserts them (WAL and bloat). Matview columns cannot be declared NOT NULL, so look at
    -- the data: pg_stats when the view was analyzed, else one scan that stops at the first NULL.
    if is_populated then
      select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by k.ordinal) into null_keys
        from pg_catalog.pg_index i
        cross join lateral pg_catalog.unnest(i.indkey::int2[]) with ordinality as k(attnum, ordinal)
        join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
        join pg_catalog.pg_class c on c.oid = i.indrelid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        left join pg_catalog.pg_stats s
          on s.schemaname = n.nspname and s.tablename = c.relname and s.attname = a.attname
       where i.indexrelid = usable
         and k.ordinal <= i.indnkeyatts
         and case when s.null_frac is not null then s.null_frac > 0
                  else steward.has_nulls(target, a.attname) end;
      if null_keys is not null then
        raise notice 'the key of % (index %) holds NULLs in %: REFRESH ... CONCURRENTLY never matches a NULL key, so every refresh deletes and re-inserts those rows', view_name, usable, null_keys
          using hint = 'Make the key non-null in the view''s query (coalesce, or filter those rows out).';
      end if;
    else
      raise notice '% is not populated yet: its first refresh is plain (readers wait for it), later ones concurrent', view_name;
    end if;
  end if;

  insert into steward.materialized_views as m (view, refresh_every, refresh_concurrently, debounce)
  values (view_name, register_materialized_view.refresh_every, register_materialized_view.concurrently,
          register_materialized_view.debounce)
  on conflict on constraint materialized_views_pkey do update
     set refresh_every = excluded.refresh_every,
         refresh_concurrently = excluded.refresh_concurrently,
         debounce = excluded.debounce
  returning * into registration;
  perform steward.audit('register_materialized_view', view_name, pg_catalog.jsonb_build_object(
    'refresh_every', refresh_every, 'concurrently', register_materialized_view.concurrently, 'debounce', debounce, 'index', usable::text));
  return registration;
end
$$;
comment on function steward.register_materialized_view(regclass, interval, boolean, interval) is
  'Registers (or changes) a materialized view for pg-steward to refresh; audited. With concurrently, a view without a unique index REFRESH ... CONCURRENTLY can use is refused (22023) with a HINT giving the index to create; NULLs in the key raise a NOTICE.';

create function steward.unregister_materialized_view(target regclass)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  view_name text := steward.materialized_view_name(target);
begin
  delete from steward.materialized_views m where m.view = view_name;
  if not found then
    return false;
  end if;
  perform steward.audit('unregister_materialized_view', view_name);
  return true;
end
$$;
comment on function steward.unregister_materialized_view(regclass) is
  'Stops pg-steward refreshing the view; returns whether it was registered. Audited. Pending refresh jobs find it unregistered and fail permanently.';

-- The order refreshes must follow. A view's rewrite rule depends (pg_depend) on every relation
-- its query reads, so walking those edges from a registered view, through plain views and
-- unregistered relations, finds the registered views it reads.
create view steward.refresh_plan as
with recursive
registered as (
  select m.view, pg_catalog.to_regclass(m.view) as relation
    from steward.materialized_views m
   where pg_catalog.to_regclass(m.view) is not null
),
reads as (
  select distinct r.ev_class as reader, d.refobjid as source
    from pg_catalog.pg_rewrite r
    join pg_catalog.pg_depend d
      on d.classid = 'pg_catalog.pg_rewrite'::regclass and d.objid = r.oid
     and d.refclassid = 'pg_catalog.pg_class'::regclass and d.refobjid <> r.ev_class
),
walk (view, relation) as (
  select g.view, x.source from registered g join reads x on x.reader = g.relation
  union
  select w.view, x.source
    from walk w join reads x on x.reader = w.relation
   where not exists (select from registered g where g.relation = w.relation)
),
direct (view, reads) as (
  select w.view, g.view from walk w join registered g on g.relation = w.relation where g.view <> w.view
),
levels (view, depth) as (
  -- union, not union all: distinct (view, depth) pairs stay few however many paths there are.
  select g.view, 0 from registered g
  union
  select d.view, l.depth + 1 from levels l join direct d on d.reads = l.view where l.depth < 100
),
linked (view, other) as (
  select view, reads from direct union select reads, view from direct
),
component (view, member) as (
  select g.view, g.view from registered g
  union
  select c.view, l.other from component c join linked l on l.view = c.member
)
select g.view,
       g.relation,
       (select pg_catalog.max(l.depth) from levels l where l.view = g.view)::integer as depth,
       'steward:refresh:' || (select pg_catalog.min(c.member) from component c where c.view = g.view) as queue_name,
       coalesce((select pg_catalog.array_agg(d.reads order by d.reads) from direct d where d.view = g.view), '{}') as reads
  from registered g;
comment on view steward.refresh_plan is
  'Registered views that exist, with the registered views they read (directly or through plain views), their depth (0: reads none) and the job queue their refreshes share with every view they are linked to, so those run one at a time, lowest depth first.';

create function steward.refresh_materialized_view(target regclass)
returns steward.refresh_log
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  view_name text := steward.materialized_view_name(target);
  registration steward.materialized_views;
  began timestamptz := pg_catalog.clock_timestamp();
  locked_at timestamptz;
  lock_wait interval := steward.setting_interval('maintenance.refresh_lock_wait');
  previous_lock_timeout text := pg_catalog.current_setting('lock_timeout');
  is_skipped boolean := false;
  use_concurrently boolean;
  error_message text;
  error_hint text;
  failure text;
  entry steward.refresh_log;
begin
  select * into registration from steward.materialized_views m where m.view = view_name;
  if not found then
    raise exception 'materialized view % is not registered', view_name
      using errcode = 'P0002', hint = pg_catalog.format('select steward.register_materialized_view(%L);', view_name);
  end if;

  -- One refresh per view anywhere: a transaction-level advisory lock, released at commit or
  -- rollback, so a crash never leaves it held. lock_timeout bounds the wait for it (a
  -- lock_timeout of 0 would mean no bound, hence the try form for a wait of 0).
  if lock_wait <= interval '0' then
    is_skipped := not pg_catalog.pg_try_advisory_xact_lock(steward.refresh_lock_key(view_name));
  else
    perform pg_catalog.set_config('lock_timeout',
      greatest(1, (extract(epoch from lock_wait) * 1000)::bigint)::text, true);
    begin
      perform pg_catalog.pg_advisory_xact_lock(steward.refresh_lock_key(view_name));
    exception when lock_not_available then
      is_skipped := true;
    end;
  end if;
  locked_at := pg_catalog.clock_timestamp();

  if is_skipped then
    failure := pg_catalog.format('another refresh of %s ran for longer than %s', view_name, lock_wait);
  else
    perform pg_catalog.set_config('lock_timeout',
      (extract(epoch from steward.setting_interval('maintenance.refresh_lock_timeout')) * 1000)::bigint::text, true);
    -- CONCURRENTLY cannot fill an unpopulated view: the first refresh of one is plain.
    select registration.refresh_concurrently and c.relispopulated into use_concurrently
      from pg_catalog.pg_class c where c.oid = target;
    begin
      if use_concurrently then
        execute pg_catalog.format('refresh materialized view concurrently %s', view_name);
      else
        execute pg_catalog.format('refresh materialized view %s', view_name);
      end if;
    exception when query_canceled or others then
      get stacked diagnostics error_message = message_text, error_hint = pg_exception_hint;
      failure := error_message || coalesce(' (hint: ' || nullif(error_hint, '') || ')', '');
    end;
  end if;
  perform pg_catalog.set_config('lock_timeout', previous_lock_timeout, true);

  insert into steward.refresh_log (view, started_at, finished_at, duration_ms, waited_ms, ran_concurrently, status, error)
  values (view_name, began, pg_catalog.clock_timestamp(),
          extract(epoch from pg_catalog.clock_timestamp() - began) * 1000,
          extract(epoch from locked_at - began) * 1000,
          use_concurrently,
          case when is_skipped then 'skipped' when failure is null then 'ok' else 'failed' end,
          failure)
  returning * into entry;
  if not is_skipped then
    update steward.materialized_views m
       set last_started_at = locked_at,
           last_refreshed_at = case when failure is null then locked_at else m.last_refreshed_at end
     where m.view = view_name;
  end if;
  return entry;
end
$$;
comment on function steward.refresh_materialized_view(regclass) is
  'Refreshes a registered view now: waits up to maintenance.refresh_lock_wait for another refresh of it to end (else logs skipped), refreshes concurrently when registered so and populated, plainly otherwise, and logs the attempt in refresh_log; a failed refresh is logged and returned (status failed), not raised. Set statement_timeout before calling (the task sets maintenance.refresh_statement_timeout).';

-- Both functions below read steward.refresh_plan, whose recursive walk of the catalog PostgreSQL
-- estimates far above jit_above_cost: with JIT available (PostgreSQL 15 from Debian, most hosted
-- servers) each call compiled for 0.1 to 2 s instead of running in 5 ms, inside the invalidation
-- drain's transaction, holding up every enqueue of the tags it had locked.
create function steward.schedule_refresh(target regclass, run_after interval default '0 seconds')
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  view_name text := steward.materialized_view_name(target);
  registration steward.materialized_views;
  plan steward.refresh_plan;
  job_id bigint;
begin
  if run_after is null or run_after < interval '0' then
    raise exception 'run_after must be an interval of zero or more, got %', coalesce(run_after::text, 'null')
      using errcode = '22023';
  end if;
  select * into registration from steward.materialized_views m where m.view = view_name;
  if not found then
    raise exception 'materialized view % is not registered', view_name
      using errcode = 'P0002', hint = pg_catalog.format('select steward.register_materialized_view(%L);', view_name);
  end if;
  select * into plan from steward.refresh_plan p where p.view = view_name;

  -- One pending job per view (its job key). preserve_run_at: a later request joins the pending
  -- job without pushing it back, so a stream of requests cannot starve the refresh. A request
  -- made while the view refreshes gets a new job, which waits in the queue behind it.
  select j.id into job_id
    from graphile_worker.add_job(
      identifier => 'refresh_materialized_view',
      payload => pg_catalog.json_build_object('view', view_name),
      queue_name => plan.queue_name,
      run_at => greatest(pg_catalog.now() + run_after, registration.last_started_at + registration.debounce),
      max_attempts => steward.setting_integer('maintenance.refresh_max_attempts'),
      job_key => 'steward:refresh:' || view_name,
      priority => plan.depth,
      job_key_mode => 'preserve_run_at') j;
  update steward.materialized_views m set last_enqueued_at = pg_catalog.now() where m.view = view_name;
  return job_id;
end
$$;
comment on function steward.schedule_refresh(regclass, interval) is
  'Enqueues a refresh of a registered view (task refresh_materialized_view) after run_after, and no sooner than its debounce after the last refresh began; deduplicated by job key steward:refresh:<schema>.<view>. Returns the job id. Called by schedule_refreshes and by the invalidation queue for mv:<schema>.<view> tags.';

create function steward.schedule_due_refreshes()
returns table (view text, job_id bigint, run_at timestamptz)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  due record;
  after interval;
  scheduled jsonb := '{}';
begin
  -- Two schedulers at once would only race to enqueue the same jobs; let one go at a time.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('steward:schedule_refreshes', 0));
  for due in
    select p.view, p.relation, p.reads
      from steward.refresh_plan p
      join steward.materialized_views m on m.view = p.view
     where m.refresh_every is not null
       and coalesce(greatest(m.last_enqueued_at, m.last_started_at), '-infinity') + m.refresh_every <= pg_catalog.now()
     order by p.depth, p.view
  loop
    -- A view runs no sooner than the views it reads that are enqueued in this round.
    select coalesce(pg_catalog.max((scheduled ->> r)::timestamptz), pg_catalog.now()) - pg_catalog.now()
      into after
      from pg_catalog.unnest(due.reads) r;
    view := due.view;
    job_id := steward.schedule_refresh(due.relation, greatest(after, interval '0'));
    select j.run_at into run_at from graphile_worker.jobs j where j.id = job_id;
    scheduled := scheduled || pg_catalog.jsonb_build_object(due.view, run_at);
    return next;
  end loop;
end
$$;
comment on function steward.schedule_due_refreshes() is
  'Enqueues a refresh of every registered view whose refresh_every has passed since its last refresh began or was enqueued, views that read others after them. Returns what it enqueued. Run every minute by the schedule_refreshes task.';

create view steward.materialized_view_status as
select m.view,
       pg_catalog.to_regclass(m.view) is not null as is_present,
       c.relispopulated as is_populated,
       m.refresh_concurrently,
       m.refresh_every,
       m.debounce,
       steward.concurrent_refresh_index(c.oid) as refresh_index,
       m.last_refreshed_at,
       pg_catalog.now() - coalesce(m.last_refreshed_at, m.registered_at) as staleness,
       last.status as last_status,
       last.error as last_error
  from steward.materialized_views m
  left join pg_catalog.pg_class c on c.oid = pg_catalog.to_regclass(m.view)
  left join lateral (
    select l.status, l.error from steward.refresh_log l
     where l.view = m.view order by l.started_at desc limit 1
  ) last on true;
comment on view steward.materialized_view_status is
  'One row per registered view: whether it exists and is populated, the index concurrent refreshes use, how stale it is (since its last successful refresh began, or since registration) and how its last refresh attempt ended.';

insert into steward.cleanup_steps (name, target, time_column, retention_setting, description) values
  ('refresh_log', 'steward.refresh_log', 'started_at', 'maintenance.refresh_log_retention',
   'refresh_log rows past maintenance.refresh_log_retention')
on conflict (name) do update set function = excluded.function, target = excluded.target,
  time_column = excluded.time_column, retention_setting = excluded.retention_setting,
  description = excluded.description;

create function steward.materialized_view_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'steward_materialized_view_staleness_seconds', 'gauge',
         'Seconds since the last successful refresh of each registered materialized view began (since its registration when it has none): its data is at most this old.',
         pg_catalog.jsonb_build_object('view', s.view), extract(epoch from s.staleness)::float8
    from steward.materialized_view_status s
  union all
  select 'steward_materialized_view_refresh_interval_seconds', 'gauge',
         'The refresh_every of each registered view that has one (views refreshed only on demand have no series): alert when staleness passes twice this.',
         pg_catalog.jsonb_build_object('view', s.view), extract(epoch from s.refresh_every)::float8
    from steward.materialized_view_status s
   where s.refresh_every is not null
$$;
comment on function steward.materialized_view_metrics() is
  'Metric source of materialized views: steward_materialized_view_staleness_seconds{view} and steward_materialized_view_refresh_interval_seconds{view}, so "staler than twice its interval" is one comparison.';

insert into steward.metric_sources (name, function, description) values
  ('materialized_views', 'steward.materialized_view_metrics()', 'staleness and refresh interval of each registered view')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
