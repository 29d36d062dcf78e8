--! Previous: sha1:bc31d84bbb10f36e19efd61f3e212603697f0bb3
--! Hash: sha1:cbff452edef88876f1e86051979039161a737649
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
      'steward.batch_insert(regclass, jsonb, text)',
      'steward.record_requests(jsonb)'
    ]) as signature;
$$;
comment on function steward.client_functions() is
  'The functions steward_client may execute, and no others: the SPEC''s (client) functions plus rate_limit_hits (the batch form the TypeScript client uses) and circuit_admit/circuit_report (circuit_allow/circuit_record with the transitions they made, which the TypeScript client logs).';

create function steward.verify_installation()
returns table ("check" text, status text, detail text)
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
  "check" := 'schema version';
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

  "check" := 'public API';
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
  "check" := 'graphile-worker schema';
  if pg_catalog.to_regclass('graphile_worker.migrations') is null then
    status := 'fail';
    detail := 'schema graphile_worker is not installed; fix: run `steward migrate`';
  else
    select pg_catalog.max(m.id) into worker_version from graphile_worker.migrations m;
    if worker_version in (18, 19) then
      status := 'ok';
      detail := pg_catalog.format('graphile-worker schema version %s', worker_version);
    else
      status := 'fail';
      detail := pg_catalog.format(
        'graphile-worker schema version %s; pg-steward''s dead-letter trigger was written for 18 and 19: install the graphile-worker version pg-steward depends on',
        worker_version);
    end if;
  end if;
  return next;

  "check" := 'dead-letter trigger';
  select t.tgenabled into item
    from pg_catalog.pg_trigger t
   where t.tgrelid = pg_catalog.to_regclass('graphile_worker._private_jobs') and t.tgname = '_steward_dead_letters';
  if not found then
    status := 'fail';
    detail := 'trigger _steward_dead_letters on graphile_worker._private_jobs is missing (a graphile-worker upgrade may have re-created the table): jobs that fail for good stay in graphile-worker; fix: run `steward migrate`, which re-installs it';
  elsif item.tgenabled = 'D' then
    status := 'fail';
    detail := 'trigger _steward_dead_letters is disabled; fix: alter table graphile_worker._private_jobs enable trigger _steward_dead_letters';
  else
    status := 'ok';
    detail := 'jobs that fail for good move to steward.dead_letters';
  end if;
  return next;

  -- Registered views --------------------------------------------------------------------------
  found_any := false;
  for item in
    select m.view, m."concurrently", c.oid, c.relkind,
           case when c.oid is not null then steward.concurrent_refresh_index(c.oid) end as refresh_index
      from steward.materialized_views m
      left join pg_catalog.pg_class c on c.oid = pg_catalog.to_regclass(m.view)
     order by m.view
  loop
    found_any := true;
    "check" := 'materialized view ' || item.view;
    if item.oid is null then
      status := 'warn';
      detail := 'registered but does not exist (skipped by the schedule); fix: create it again, or select steward.unregister_materialized_view(...) before dropping a view for good';
    elsif item.relkind <> 'm' then
      status := 'fail';
      detail := 'registered, but it is no longer a materialized view; fix: unregister it';
    elsif item."concurrently" and item.refresh_index is null then
      status := 'fail';
      select pg_catalog.format('no unique index that REFRESH ... CONCURRENTLY can use, so every refresh fails; fix: %s',
                               a.hint)
        into detail from steward.refresh_index_advice(item.oid) a;
    else
      status := 'ok';
      detail := case when item."concurrently" then 'refreshed concurrently using ' || item.refresh_index::text
                     else 'refreshed plainly (readers wait)' end;
    end if;
    return next;
  end loop;
  if not found_any then
    "check" := 'materialized views';
    status := 'ok';
    detail := 'none registered';
    return next;
  end if;

  -- Tracked tables ----------------------------------------------------------------------------
  found_any := false;
  for item in
    select t.target, t.tags,
           pg_catalog.array_agg(tr.tgname::text order by tr.tgname) filter (where tr.tgenabled <> 'D') as enabled
      from steward.tracked_tables t
      left join pg_catalog.pg_trigger tr
        on tr.tgrelid = t.target and tr.tgname in ('steward_invalidate_insert', 'steward_invalidate_update', 'steward_invalidate_delete')
     group by t.target, t.tags
     order by t.target::text
  loop
    found_any := true;
    "check" := 'tracked table ' || item.target::text;
    if not exists (select from pg_catalog.pg_class c where c.oid = item.target) then
      status := 'fail';
      detail := pg_catalog.format('tracked table (oid %s) no longer exists; fix: delete from steward.tracked_tables where target = %s', item.target::oid, item.target::oid);
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
    "check" := 'tracked tables';
    status := 'ok';
    detail := 'none tracked';
    return next;
  end if;

  -- Security ----------------------------------------------------------------------------------
  "check" := 'security definer search_path';
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

  "check" := 'steward_client role';
  if exists (select from pg_catalog.pg_roles r where r.rolname = 'steward_client') then
    status := 'ok';
    detail := pg_catalog.format('granted to %s role(s)',
      (select pg_catalog.count(*) from pg_catalog.pg_auth_members m where m.roleid = 'steward_client'::regrole));
  else
    status := 'fail';
    detail := 'role steward_client is missing; fix: create role steward_client nologin; then run `steward migrate`';
  end if;
  return next;

  "check" := 'table privileges';
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

  "check" := 'function privileges';
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
  "check" := 'cleanup steps';
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

  "check" := 'recalculations';
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

  "check" := 'workers';
  if (select pg_catalog.count(*) from steward.workers w
       where w.heartbeat_at > pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout')) > 0 then
    status := 'ok';
    select pg_catalog.format('%s worker(s) alive: %s', pg_catalog.count(*),
                             pg_catalog.string_agg(coalesce(w.host, '?') || ':' || coalesce(w.pid::text, '?'), ', ' order by w.started_at))
      into detail
      from steward.workers w
     where w.heartbeat_at > pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout');
  else
    status := 'warn';
    detail := 'no worker has sent a heartbeat recently: nothing runs jobs, drains invalidations or refreshes views; fix: start `steward worker`';
  end if;
  return next;

  "check" := 'pg_stat_statements';
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
  'Checks that pg-steward is in place and safe: versions, the SPEC''s functions and tables, graphile-worker''s schema and the dead-letter trigger, the unique indexes of registered views, the triggers of tracked tables, pinned search_path, that steward_client and PUBLIC reach nothing but the client functions, cleanup and recalculation registries, circuits against their cap, live workers, pg_stat_statements. One row per check: ok, warn or fail, and for a problem a detail naming the object and the fix.';

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
                     pg_catalog.count(*) filter (where j.locked_at is null and j.run_at <= pg_catalog.now()) as ready,
                     pg_catalog.count(*) filter (where j.locked_at is null and j.run_at > pg_catalog.now()) as scheduled,
                     pg_catalog.count(*) filter (where j.locked_at is not null) as running,
                     pg_catalog.count(*) filter (where j.attempts > 0 and j.locked_at is null) as retrying,
                     pg_catalog.min(j.run_at) filter (where j.locked_at is null and j.run_at <= pg_catalog.now()) as oldest_ready_since
                from graphile_worker.jobs j
               group by j.queue_name, j.task_identifier) as q), '[]'::jsonb),
    'running', coalesce((
      select pg_catalog.jsonb_agg(r order by r.locked_at)
        from (select j.id, j.task_identifier as task, j.locked_by, j.locked_at, j.attempts, j.max_attempts,
                     w.host, w.pid
                from graphile_worker.jobs j
                left join steward.workers w on w.pool_id = j.locked_by
               where j.locked_at is not null) as r), '[]'::jsonb),
    'workers', coalesce((
      select pg_catalog.jsonb_agg(w order by w.started_at)
        from (select w.pool_id, w.host, w.pid, w.started_at, w.heartbeat_at,
                     w.heartbeat_at > pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout') as alive
                from steward.workers w) as w), '[]'::jsonb),
    'dead_letters', coalesce((
      select pg_catalog.jsonb_agg(d order by d.count desc, d.task)
        from (select d.source, coalesce(d.task_identifier, d.source) as task, pg_catalog.count(*) as count,
                     pg_catalog.max(d.failed_at) as last_failed_at
                from steward.dead_letters d
               where d.replayed_at is null
               group by d.source, coalesce(d.task_identifier, d.source)) as d), '[]'::jsonb),
    'invalidations', (
      select pg_catalog.jsonb_build_object(
               'pending', pg_catalog.count(*),
               'due', pg_catalog.count(*) filter (where i.deliver_at <= pg_catalog.now() and (i.claimed_until is null or i.claimed_until < pg_catalog.now())),
               'claimed', pg_catalog.count(*) filter (where i.claimed_until > pg_catalog.now()),
               'oldest_age_seconds', extract(epoch from pg_catalog.now() - pg_catalog.min(i.enqueued_at)))
        from steward.invalidations i),
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
  'The state of the system in one jsonb document, for `steward status` and for psql (select jsonb_pretty(steward.status())): queue depth by queue and task, running jobs and their workers, worker heartbeats, dead letters by task, pending invalidations and the oldest one''s age, registered views and their staleness, circuits (at most 50 listed, open ones first, and their totals), the most denied rate-limit policies and keys of the last hour, the last vacuum, the last run of each recalculation.';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
