--! Previous: sha1:a14addb81d89185febcea4d4e614f9c96e80922e
--! Hash: sha1:54ea353f30d281ac3bd7362d140311e2dab52c68
--! Message: verification

-- "Is everything in place?" after a deploy (verify_installation), and "how is it going?" for the
-- one on call (status). Both read only; both are for the owner (the DBA), not steward_client.

create function steward.client_functions()
returns regprocedure[]
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.array_agg(pg_catalog.to_regprocedure(signature) order by signature)
    from pg_catalog.unnest(array[
      'steward.rate_limit_hit(text, text, integer)',
      'steward.rate_limit_hits(text[], text[], integer[])',
      'steward.lease_acquire(text, integer, interval)',
      'steward.lease_release(uuid)',
      'steward.circuit_allow(text)',
      'steward.circuit_record(text, boolean, text)',
      'steward.circuit_admit(text)',
      'steward.circuit_report(text, boolean, text)',
      'steward.enqueue_invalidation(text, interval)',
      'steward.page(regclass, text[], text, integer, jsonb)',
      'steward.page_plan(regclass, text[], jsonb)',
      'steward.batch_insert(regclass, jsonb, text)',
      'steward.record_requests(jsonb)'
    ]) as signature;
$$;
comment on function steward.client_functions() is
  'The functions steward_client may execute, and no others: the SPEC''s (client) functions plus rate_limit_hits (the batch form the TypeScript client uses), page_plan (the checked, cached plan page asks for; it reads only the catalogs) and circuit_admit/circuit_report (circuit_allow/circuit_record with the transitions they made, which the TypeScript client logs).';

create function steward.verify_installation()
returns table (name text, status text, detail text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  public_api text[] := array[
    'steward.set_rate_limit(text, integer, interval)', 'steward.rate_limit_hit(text, text, integer)',
    'steward.lease_acquire(text, integer, interval)', 'steward.lease_release(uuid)',
    'steward.circuit_configure(text, integer, interval, integer)', 'steward.circuit_allow(text)',
    'steward.circuit_record(text, boolean, text)', 'steward.circuit_state(text)',
    'steward.enqueue_invalidation(text, interval)', 'steward.track_table(regclass, text[])',
    'steward.untrack_table(regclass)', 'steward.claim_invalidations(integer, interval)',
    'steward.complete_invalidations(bigint[])', 'steward.fail_invalidations(bigint[], text, interval)',
    'steward.replay_dead_letter(bigint)', 'steward.purge_dead_letters(interval)',
    'steward.list_dead_letters(text, integer)',
    'steward.register_materialized_view(regclass, interval, boolean, interval)',
    'steward.unregister_materialized_view(regclass)',
    'steward.page(regclass, text[], text, integer, jsonb)', 'steward.batch_insert(regclass, jsonb, text)',
    'steward.record_requests(jsonb)', 'steward.register_recalculation(text, text, regprocedure, integer)',
    'steward.verify_installation()'];
  public_relations text[] := array[
    'steward.audit_log', 'steward.dead_letters', 'steward.refresh_log', 'steward.maintenance_log',
    'steward.request_stats_5m', 'steward.request_stats_hourly', 'steward.recalc_runs', 'steward.job_stats'];
  missing text[];
  problems text[];
  worker_version integer;
  item record;
  found_any boolean;
begin
  -- Versions --------------------------------------------------------------------------------
  name := 'schema version';
  if pg_catalog.to_regclass('graphile_migrate.migrations') is null then
    status := 'warn';
    detail := 'graphile_migrate.migrations is missing, so the applied version cannot be told; install with `steward migrate`';
  else
    select 'ok', pg_catalog.format('steward migration %s (%s applied); PostgreSQL %s',
                   pg_catalog.max(m.filename), pg_catalog.count(*), pg_catalog.current_setting('server_version'))
      into status, detail
      from graphile_migrate.migrations m;
  end if;
  return next;

  name := 'public API';
  select pg_catalog.array_agg(s order by s) into missing
    from pg_catalog.unnest(public_api) s where pg_catalog.to_regprocedure(s) is null;
  select pg_catalog.array_agg(r order by r) into problems
    from pg_catalog.unnest(public_relations) r where pg_catalog.to_regclass(r) is null;
  if missing is null and problems is null then
    status := 'ok';
    detail := pg_catalog.format('%s functions and %s tables and views of the SPEC are present',
                                pg_catalog.cardinality(public_api), pg_catalog.cardinality(public_relations));
  else
    status := 'fail';
    detail := 'missing: ' || pg_catalog.array_to_string(coalesce(missing, '{}') || coalesce(problems, '{}'), ', ')
              || '; fix: run `steward migrate` (a migration was not applied, or an object was dropped by hand)';
  end if;
  return next;

  -- graphile-worker ---------------------------------------------------------------------------
  name := 'graphile-worker schema';
  if pg_catalog.to_regclass('graphile_worker.migrations') is null then
    status := 'fail';
    detail := 'schema graphile_worker is not installed; fix: run `steward migrate`';
  else
    select pg_catalog.max(m.id) into worker_version from graphile_worker.migrations m;
    if worker_version in (18, 19, 20) then
      status := 'ok';
      detail := pg_catalog.format('graphile-worker schema version %s', worker_version);
    else
      status := 'fail';
      detail := pg_catalog.format(
        'graphile-worker schema version %s; pg-steward''s triggers on graphile-worker''s tables were written for 18 to 20: install the graphile-worker version pg-steward depends on',
        worker_version);
    end if;
  end if;
  return next;

  name := 'dead-letter trigger';
  select t.tgenabled into item
    from pg_catalog.pg_trigger t
   where t.tgrelid = pg_catalog.to_regclass('graphile_worker._private_jobs') and t.tgname = '_steward_dead_letters';
  if not found then
    status := 'fail';
    detail := 'trigger _steward_dead_letters on graphile_worker._private_jobs is missing (a graphile-worker upgrade may have re-created the table): jobs that fail for good stay in graphile-worker; fix: run `steward migrate`, which re-installs it';
  elsif item.tgenabled = 'D' then
    status := 'warn';
    detail := 'switched off (steward.disable_dead_letters()): jobs that fail for good stay in graphile-worker''s table; switch on: select steward.enable_dead_letters();';
  else
    status := 'ok';
    detail := 'jobs that fail for good move to steward.dead_letters';
  end if;
  return next;

  -- Registered views --------------------------------------------------------------------------
  found_any := false;
  for item in
    select m.view, m.refresh_concurrently, c.oid, c.relkind,
           case when c.oid is not null then steward.concurrent_refresh_index(c.oid) end as refresh_index
      from steward.materialized_views m
      left join pg_catalog.pg_class c on c.oid = pg_catalog.to_regclass(m.view)
     order by m.view
  loop
    found_any := true;
    name := 'materialized view ' || item.view;
    if item.oid is null then
      status := 'warn';
      detail := 'registered but does not exist (skipped by the schedule); fix: create it again, or select steward.unregister_materialized_view(...) before dropping a view for good';
    elsif item.relkind <> 'm' then
      status := 'fail';
      detail := 'registered, but it is no longer a materialized view; fix: unregister it';
    elsif item.refresh_concurrently and item.refresh_index is null then
      status := 'fail';
      select pg_catalog.format('no unique index that REFRESH ... CONCURRENTLY can use, so every refresh fails; fix: %s',
                               a.hint)
        into detail from steward.refresh_index_advice(item.oid) a;
    else
      status := 'ok';
      detail := case when item.refresh_concurrently then 'refreshed concurrently using ' || item.refresh_index::text
                     else 'refreshed plainly (readers wait)' end;
    end if;
    return next;
  end loop;
  if not found_any then
    name := 'materialized views';
    status := 'ok';
    detail := 'none registered';
    return next;
  end if;

  -- Tracked tables ----------------------------------------------------------------------------
  found_any := false;
  for item in
    select t.target, t.tags, t.disabled_at,
           pg_catalog.array_agg(tr.tgname::text order by tr.tgname) filter (where tr.tgenabled <> 'D') as enabled,
           pg_catalog.count(tr.tgname) as present
      from steward.tracked_tables t
      left join pg_catalog.pg_trigger tr
        on tr.tgrelid = t.target and tr.tgname in ('steward_invalidate_insert', 'steward_invalidate_update', 'steward_invalidate_delete')
     group by t.target, t.tags, t.disabled_at
     order by t.target::text
  loop
    found_any := true;
    name := 'tracked table ' || item.target::text;
    if not exists (select from pg_catalog.pg_class c where c.oid = item.target) then
      status := 'fail';
      detail := pg_catalog.format('tracked table (oid %s) no longer exists; fix: delete from steward.tracked_tables where target = %s', item.target::oid, item.target::oid);
    elsif item.disabled_at is not null and item.present = 3 and item.enabled is null then
      status := 'warn';
      detail := pg_catalog.format('switched off since %s (steward.disable_tracking): its writes enqueue nothing; switch on: select steward.enable_tracking(%L);',
                                  item.disabled_at, item.target::text);
    elsif coalesce(pg_catalog.cardinality(item.enabled), 0) < 3 then
      status := 'fail';
      detail := pg_catalog.format('only %s of its 3 invalidation triggers are in place and enabled, so some writes enqueue nothing; fix: select steward.track_table(%L, %L)',
                                  coalesce(pg_catalog.cardinality(item.enabled), 0), item.target::text, item.tags::text);
    else
      status := 'ok';
      detail := 'tags ' || pg_catalog.array_to_string(item.tags, ', ');
    end if;
    return next;
  end loop;
  if not found_any then
    name := 'tracked tables';
    status := 'ok';
    detail := 'none tracked';
    return next;
  end if;

  -- Security ----------------------------------------------------------------------------------
  name := 'security definer search_path';
  select pg_catalog.array_agg(p.oid::regprocedure::text order by p.oid::regprocedure::text) into problems
    from pg_catalog.pg_proc p
   where p.pronamespace = 'steward'::regnamespace and p.prosecdef
     and not exists (select from pg_catalog.unnest(p.proconfig) c where c like 'search_path=%');
  if problems is null then
    status := 'ok';
    detail := 'every SECURITY DEFINER function pins search_path';
  else
    status := 'fail';
    detail := 'SECURITY DEFINER without a pinned search_path (a caller''s objects could be run with the owner''s rights): '
              || pg_catalog.array_to_string(problems, ', ')
              || '; fix: alter function <name> set search_path = pg_catalog, pg_temp';
  end if;
  return next;

  name := 'steward_client role';
  if exists (select from pg_catalog.pg_roles r where r.rolname = 'steward_client') then
    status := 'ok';
    detail := pg_catalog.format('granted to %s role(s)',
      (select pg_catalog.count(*) from pg_catalog.pg_auth_members m where m.roleid = 'steward_client'::regrole));
  else
    status := 'fail';
    detail := 'role steward_client is missing; fix: create role steward_client nologin; then run `steward migrate`';
  end if;
  return next;

  name := 'table privileges';
  if exists (select from pg_catalog.pg_roles r where r.rolname = 'steward_client') then
    select pg_catalog.array_agg(pg_catalog.format('%s (%s)', c.oid::regclass, who.role) order by c.oid::regclass::text)
      into problems
      from pg_catalog.pg_class c
     cross join (values ('steward_client'), ('public')) as who(role)
     where c.relnamespace = 'steward'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
       and (case when c.relkind = 'S' then pg_catalog.has_sequence_privilege(who.role, c.oid, 'usage, select, update')
                 else pg_catalog.has_table_privilege(who.role, c.oid, 'select, insert, update, delete, truncate, references, trigger') end);
  else
    select pg_catalog.array_agg(pg_catalog.format('%s (public)', c.oid::regclass)) into problems
      from pg_catalog.pg_class c
     where c.relnamespace = 'steward'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f')
       and pg_catalog.has_table_privilege('public', c.oid, 'select, insert, update, delete, truncate, references, trigger');
  end if;
  if problems is null then
    status := 'ok';
    detail := 'steward_client and PUBLIC can read and write no steward table';
  else
    status := 'fail';
    detail := 'directly reachable: ' || pg_catalog.array_to_string(problems, ', ')
              || '; fix: revoke all on <table> from <role> (clients go through the functions)';
  end if;
  return next;

  name := 'function privileges';
  problems := null;
  select pg_catalog.array_agg(pg_catalog.format('%s (public)', p.oid::regprocedure) order by p.oid::regprocedure::text)
    into problems
    from pg_catalog.pg_proc p
   where p.pronamespace = 'steward'::regnamespace and pg_catalog.has_function_privilege('public', p.oid, 'execute');
  if exists (select from pg_catalog.pg_roles r where r.rolname = 'steward_client') then
    select coalesce(problems, '{}') || coalesce(pg_catalog.array_agg(pg_catalog.format('%s (steward_client)', p.oid::regprocedure)
                                                order by p.oid::regprocedure::text), '{}')
      into problems
      from pg_catalog.pg_proc p
     where p.pronamespace = 'steward'::regnamespace
       and pg_catalog.has_function_privilege('steward_client', p.oid, 'execute')
       and p.oid <> all (steward.client_functions()::oid[]);
    select pg_catalog.array_agg(f::text order by f::text) into missing
      from pg_catalog.unnest(steward.client_functions()) f
     where f is not null and not pg_catalog.has_function_privilege('steward_client', f, 'execute');
  end if;
  if coalesce(pg_catalog.cardinality(problems), 0) = 0 and missing is null then
    status := 'ok';
    detail := pg_catalog.format('PUBLIC executes no steward function; steward_client executes exactly the %s client functions',
                                pg_catalog.cardinality(steward.client_functions()));
  else
    status := 'fail';
    detail := pg_catalog.concat_ws('; ',
      case when coalesce(pg_catalog.cardinality(problems), 0) > 0 then
        'executable beyond the client API: ' || pg_catalog.array_to_string(problems, ', ')
        || ' (fix: revoke execute on function <name> from <role>)' end,
      case when missing is not null then
        'client functions steward_client cannot execute: ' || pg_catalog.array_to_string(missing, ', ')
        || ' (fix: grant execute on function <name> to steward_client)' end);
  end if;
  return next;

  -- Registries --------------------------------------------------------------------------------
  name := 'cleanup steps';
  select pg_catalog.array_agg(s.name order by s.name) into problems
    from steward.cleanup_steps s
   where case when s.function is not null
              then not exists (select from pg_catalog.pg_proc p where p.oid = s.function)
              else not exists (select from pg_catalog.pg_attribute a
                                where a.attrelid = s.target and a.attname = s.time_column and not a.attisdropped) end;
  if problems is null then
    status := 'ok';
    detail := pg_catalog.format('%s steps, every function and table present', (select pg_catalog.count(*) from steward.cleanup_steps));
  else
    status := 'fail';
    detail := 'steps whose function, table or time column is gone: ' || pg_catalog.array_to_string(problems, ', ')
              || '; fix: delete from steward.cleanup_steps where name = <step>, or re-create what it names';
  end if;
  return next;

  name := 'metric sources';
  select pg_catalog.array_agg(m.name order by m.name) into problems
    from steward.metric_sources m
   where not exists (select from pg_catalog.pg_proc p where p.oid = m.function and p.pronargs = 0);
  select pg_catalog.array_agg(m.labels ->> 'source' order by m.labels ->> 'source') into missing
    from steward.metrics() m
   where m.metric = 'steward_metric_source_errors' and m.value > 0;
  if problems is not null then
    status := 'fail';
    detail := 'metric sources whose function is gone or takes arguments: ' || pg_catalog.array_to_string(problems, ', ')
              || '; their series are missing from /metrics; fix: run `steward migrate`, or delete from steward.metric_sources where name = <source>';
  elsif missing is not null then
    status := 'warn';
    detail := 'metric sources that fail (their series are missing from /metrics; the error is in the server log): '
              || pg_catalog.array_to_string(missing, ', ');
  else
    status := 'ok';
    detail := pg_catalog.format('%s sources, all answering', (select pg_catalog.count(*) from steward.metric_sources));
  end if;
  missing := null;
  return next;

  name := 'recalculations';
  select pg_catalog.array_agg(r.name order by r.name) into problems
    from steward.recalculations r
   where not exists (select from pg_catalog.pg_proc p where p.oid = r.compute);
  if problems is null then
    status := 'ok';
    detail := pg_catalog.format('%s registered, every compute function present', (select pg_catalog.count(*) from steward.recalculations));
  else
    status := 'fail';
    detail := 'recalculations whose compute function is gone: ' || pg_catalog.array_to_string(problems, ', ')
              || '; fix: register them again with steward.register_recalculation';
  end if;
  return next;

  -- Runtime -----------------------------------------------------------------------------------
  return query select * from steward.verify_circuits();

  name := 'workers';
  if exists (select from steward.worker_status w where w.is_alive) then
    status := 'ok';
    select pg_catalog.format('%s worker(s) alive: %s', pg_catalog.count(*),
                             pg_catalog.string_agg(coalesce(w.host, '?') || ':' || coalesce(w.pid::text, '?'), ', ' order by w.started_at))
      into detail
      from steward.worker_status w
     where w.is_alive;
  else
    status := 'warn';
    detail := 'no worker has sent a heartbeat recently: nothing runs jobs, drains invalidations or refreshes views; fix: start `steward worker`';
  end if;
  return next;

  name := 'unserved jobs';
  select pg_catalog.string_agg(pg_catalog.format('%s (%s)', u.task_identifier, u.jobs), ', ' order by u.task_identifier)
    into detail
    from steward.unserved_jobs() u;
  if detail is null then
    status := 'ok';
    detail := 'every due job is for a task a live worker runs';
  else
    status := 'warn';
    detail := 'due jobs for tasks no live worker runs, waiting until one does: ' || detail
              || '; fix: start a worker with that task (a module in STEWARD_TASKS_DIR), or remove the jobs (select graphile_worker.permanently_fail_jobs(...))';
  end if;
  return next;

  name := 'pg_stat_statements';
  if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_stat_statements') then
    status := 'ok';
    detail := 'installed: sql/slow-statements.sql works';
  else
    status := 'warn';
    detail := 'not installed: sql/slow-statements.sql has nothing to read; fix: add it to shared_preload_libraries and create extension pg_stat_statements (optional)';
  end if;
  return next;
end
$$;
comment on function steward.verify_installation() is
  'Checks that pg-steward is in place and safe: versions, the SPEC''s functions and tables, graphile-worker''s schema and the dead-letter trigger, the unique indexes of registered views, the triggers of tracked tables, pinned search_path, that steward_client and PUBLIC reach nothing but the client functions, cleanup and recalculation registries, circuits against their cap, live workers, due jobs no live worker runs, pg_stat_statements. One row per check: ok, warn or fail, and for a problem a detail naming the object and the fix.';

create function steward.status()
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'at', pg_catalog.now(),
    'queues', coalesce((
      select pg_catalog.jsonb_agg(q order by q.queue_name nulls first, q.task)
        from (select j.queue_name, j.task_identifier as task,
                     pg_catalog.count(*) filter (where j.state = 'ready') as ready,
                     pg_catalog.count(*) filter (where j.state = 'scheduled') as scheduled,
                     pg_catalog.count(*) filter (where j.state = 'running') as running,
                     pg_catalog.count(*) filter (where j.state = 'retrying') as retrying,
                     pg_catalog.count(*) filter (where j.state = 'failed') as failed,
                     pg_catalog.min(j.run_at) filter (where j.state = 'ready') as oldest_ready_since
                from steward.job_states() j
               group by j.queue_name, j.task_identifier) as q), '[]'::jsonb),
    'running', coalesce((
      select pg_catalog.jsonb_agg(r order by r.locked_at)
        from (select j.id, j.task_identifier as task, j.locked_by, j.locked_at, j.attempts, j.max_attempts,
                     w.host, w.pid
                from steward.job_states() j
                left join steward.worker_status w on w.pool_id = j.locked_by
               where j.state = 'running') as r), '[]'::jsonb),
    'workers', coalesce((
      select pg_catalog.jsonb_agg(w order by w.started_at)
        from (select w.pool_id, w.host, w.pid, w.started_at, w.heartbeat_at, w.is_alive as alive, w.tasks
                from steward.worker_status w) as w), '[]'::jsonb),
    'unserved', coalesce((
      select pg_catalog.jsonb_agg(u order by u.task)
        from (select u.task_identifier as task, u.jobs, u.oldest_run_at
                from steward.unserved_jobs() u) as u), '[]'::jsonb),
    'dead_letters', coalesce((
      select pg_catalog.jsonb_agg(d order by d.count desc, d.task)
        from (select d.source, coalesce(d.task_identifier, d.source) as task, pg_catalog.count(*) as count,
                     pg_catalog.max(d.failed_at) as last_failed_at
                from steward.dead_letters d
               where d.replayed_at is null
               group by d.source, coalesce(d.task_identifier, d.source)) as d), '[]'::jsonb),
    'invalidations', (
      select pg_catalog.jsonb_build_object(
               'pending', pg_catalog.sum(p.entries),
               'due', pg_catalog.sum(p.entries) filter (where p.state = 'ready'),
               'claimed', pg_catalog.sum(p.entries) filter (where p.state = 'claimed'),
               'oldest_age_seconds', extract(epoch from pg_catalog.now() - pg_catalog.min(p.oldest_enqueued_at)))
        from steward.invalidation_states() p),
    'views', coalesce((
      select pg_catalog.jsonb_agg(v order by v.view)
        from (select s.view, s.is_present, s.is_populated, s.refresh_every, s.last_refreshed_at,
                     extract(epoch from s.staleness) as staleness_seconds, s.last_status, s.last_error
                from steward.materialized_view_status s) as v), '[]'::jsonb),
    'last_vacuum', (
      select pg_catalog.jsonb_build_object('at', pg_catalog.max(l.started_at),
               'tables', pg_catalog.count(*) filter (where l.started_at > pg_catalog.now() - interval '1 day'))
        from steward.maintenance_log l where l.action = 'vacuum'),
    'recalculations', coalesce((
      select pg_catalog.jsonb_agg(r order by r.name)
        from (select distinct on (r.name) r.name, r.id as run, r.status, r.started_at, r.finished_at,
                     r.keys_total, r.keys_done, r.batches_failed
                from steward.recalc_runs r
               order by r.name, r.id desc) as r), '[]'::jsonb)
  ) || (select pg_catalog.jsonb_build_object('circuits', c->'listed', 'circuit_totals', c - 'listed')
          from steward.circuit_summary(50) c)
    || pg_catalog.jsonb_build_object('rate_limit_denials', steward.rate_limit_denial_summary(10));
$$;
comment on function steward.status() is
  'The state of the system in one jsonb document, for `steward status` and for psql (select jsonb_pretty(steward.status())): queue depth by queue, task and state (as steward.job_states() defines them), running jobs and their workers, worker heartbeats (with the tasks each runs), due jobs no live worker runs (unserved), dead letters by task, pending invalidations and the oldest one''s age, registered views and their staleness, circuits (at most 50 listed, open ones first, and their totals), the most denied rate-limit policies and keys of the last hour, the last vacuum, the last run of each recalculation.';

-- Health: the database's part of the worker's /readyz ---------------------------------------------

-- The checks below are facts about the whole database: every worker reports the same. A `fail`
-- makes every worker answer 503 at once, and an orchestrator that restarts unready workers
-- would restart the whole fleet without draining a single entry; so by default they only warn,
-- and a fail threshold is a choice a team makes (0 turns a threshold off).
insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('health.dead_letters_window', '1 hour', 'interval', '1 minute', '365 days',
   '/readyz check deadLetters counts the dead letters (not replayed) that failed within this window.'),
  ('health.dead_letters_warn', '1', 'integer', '0', '1000000000',
   'deadLetters is warn when at least this many dead letters failed within health.dead_letters_window (0: never).'),
  ('health.dead_letters_fail', '0', 'integer', '0', '1000000000',
   'deadLetters is fail (/readyz answers 503) when at least this many dead letters failed within health.dead_letters_window (0: never, the default).'),
  ('health.invalidation_age_warn', '5 minutes', 'interval', '0', '365 days',
   'invalidations is warn when the oldest undelivered invalidation is older than this (0: never).'),
  ('health.invalidation_age_fail', '0', 'interval', '0', '365 days',
   'invalidations is fail (/readyz answers 503) when the oldest undelivered invalidation is older than this (0: never, the default).'),
  ('health.view_staleness_warn', '2', 'numeric', '0', '1000',
   'views is warn when a view with refresh_every is staler than this many times its refresh_every (0: never), or a registered view is missing, or its last refresh failed.'),
  ('health.view_staleness_fail', '0', 'numeric', '0', '1000',
   'views is fail (/readyz answers 503) when a view with refresh_every is staler than this many times its refresh_every (0: never, the default).')
on conflict (name) do nothing;

create function steward.health_checks()
returns table (name text, status text, details jsonb)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with dead as (
    select pg_catalog.count(*) filter (where d.failed_at >= pg_catalog.now() - steward.setting_interval('health.dead_letters_window')) as recent,
           pg_catalog.count(*) as not_replayed,
           steward.setting_integer('health.dead_letters_warn') as warn_at,
           steward.setting_integer('health.dead_letters_fail') as fail_at
      from steward.dead_letters d
     where d.replayed_at is null
  ), pending as (
    select coalesce(pg_catalog.sum(p.entries), 0) as entries,
           coalesce(pg_catalog.now() - pg_catalog.min(p.oldest_enqueued_at), interval '0') as oldest_age,
           steward.setting_interval('health.invalidation_age_warn') as warn_after,
           steward.setting_interval('health.invalidation_age_fail') as fail_after
      from steward.invalidation_states() p
  ), view_state as (
    select s.view, not s.is_present as is_missing, s.last_status = 'failed' as has_failed,
           s.refresh_every is not null and warn.factor > 0 and s.staleness > s.refresh_every * warn.factor as is_stale,
           s.refresh_every is not null and fail.factor > 0 and s.staleness > s.refresh_every * fail.factor as is_very_stale
      from steward.materialized_view_status s
     cross join (select steward.setting('health.view_staleness_warn')::float8 as factor) as warn
     cross join (select steward.setting('health.view_staleness_fail')::float8 as factor) as fail
  ), views as (
    select pg_catalog.count(*) as registered,
           pg_catalog.count(*) filter (where v.is_very_stale) as very_stale,
           pg_catalog.count(*) filter (where v.is_stale or v.is_missing or v.has_failed) as troubled,
           -- At most ten names each: the body stays small whatever is registered.
           (pg_catalog.array_agg(v.view order by v.view) filter (where v.is_stale))[1:10] as stale,
           (pg_catalog.array_agg(v.view order by v.view) filter (where v.has_failed))[1:10] as failed,
           (pg_catalog.array_agg(v.view order by v.view) filter (where v.is_missing))[1:10] as missing
      from view_state v
  )
  select 'deadLetters',
         case when d.fail_at > 0 and d.recent >= d.fail_at then 'fail'
              when d.warn_at > 0 and d.recent >= d.warn_at then 'warn' else 'ok' end,
         pg_catalog.jsonb_build_object('recent', d.recent, 'notReplayed', d.not_replayed,
           'windowSeconds', extract(epoch from steward.setting_interval('health.dead_letters_window'))::float8)
    from dead d
  union all
  select 'invalidations',
         case when p.fail_after > interval '0' and p.oldest_age > p.fail_after then 'fail'
              when p.warn_after > interval '0' and p.oldest_age > p.warn_after then 'warn' else 'ok' end,
         pg_catalog.jsonb_build_object('pending', p.entries, 'oldestAgeSeconds', pg_catalog.round(extract(epoch from p.oldest_age), 3)::float8)
    from pending p
  union all
  select 'views',
         case when v.very_stale > 0 then 'fail' when v.troubled > 0 then 'warn' else 'ok' end,
         pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('registered', v.registered,
           'stale', pg_catalog.to_jsonb(v.stale), 'failed', pg_catalog.to_jsonb(v.failed), 'missing', pg_catalog.to_jsonb(v.missing)))
    from views v
$$;
comment on function steward.health_checks() is
  'The database''s checks of the worker''s /readyz, one row each (name, ok/warn/fail, details as counts and view names, never error text): deadLetters (dead letters failed within health.dead_letters_window against health.dead_letters_warn/_fail), invalidations (the oldest undelivered entry''s age against health.invalidation_age_warn/_fail), views (missing, last refresh failed, or staler than health.view_staleness_warn/_fail times refresh_every). Fail thresholds are off by default.';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
