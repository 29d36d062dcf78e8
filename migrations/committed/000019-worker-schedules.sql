--! Previous: sha1:880bbda5d46d2f8c16e09ec0cd7a48fab49b3ced
--! Hash: sha1:48a15dbfb84e956ade11bf3dc1899f9c92d0086a
--! Message: worker-schedules

-- Workers report their schedules. `steward status` showed the schedules a worker started with
-- the environment of the command would have, which on an operator's machine is not what the
-- fleet runs (another host's STEWARD_CRON_* and crontab). Each worker now sends its schedules on
-- its heartbeat, as it sends its task identifiers, and steward.worker_schedules() lists the live
-- workers' schedules.

alter table steward.workers add column if not exists schedules jsonb;
comment on column steward.workers.schedules is
  'The cron schedules the pool runs, as its last heartbeat reported them: a JSON array of {identifier, task, pattern, payload, source}. Null for a worker of a version that does not report them.';

-- A second signature, not a new parameter on the first: workers of the previous version keep
-- calling the four-argument function during a rolling upgrade, and a fifth parameter with a
-- default would make their calls ambiguous.
create or replace function steward.worker_heartbeat(pool_id text, host text, pid integer, tasks text[], schedules jsonb)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if pool_id is null then
    raise exception 'worker_heartbeat needs a pool id' using errcode = '22004';
  end if;
  if schedules is not null and pg_catalog.jsonb_typeof(schedules) <> 'array' then
    raise exception 'schedules must be a JSON array, got %', pg_catalog.jsonb_typeof(schedules) using errcode = '22023';
  end if;
  update steward.workers w
     set heartbeat_at = pg_catalog.now(),
         tasks = coalesce(worker_heartbeat.tasks, w.tasks),
         schedules = coalesce(worker_heartbeat.schedules, w.schedules)
   where w.pool_id = worker_heartbeat.pool_id;
  if found then
    return true;
  end if;
  insert into steward.workers (pool_id, host, pid, tasks, schedules)
  values (pool_id, host, pid, coalesce(tasks, '{}'), schedules)
  on conflict on constraint workers_pkey do update
    set heartbeat_at = pg_catalog.now(), tasks = excluded.tasks, schedules = excluded.schedules;
  return false;
end
$$;
comment on function steward.worker_heartbeat(text, text, integer, text[], jsonb) is
  'A worker pool''s heartbeat with its schedules: refreshes its row (and the task identifiers and schedules it runs, when given), or creates it. Returns false when there was no row: the first beat, or the pool was presumed dead and its jobs released. The four-argument form is the previous version''s (no schedules).';

create or replace view steward.worker_status as
select w.pool_id, w.host, w.pid, w.started_at, w.heartbeat_at,
       w.heartbeat_at >= pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout') as is_alive,
       w.tasks,
       w.schedules
  from steward.workers w;

create or replace function steward.worker_schedules()
returns table (identifier text, task text, pattern text, payload jsonb, source text, workers integer)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select s.identifier, s.task, s.pattern, s.payload, s.source, pg_catalog.count(*)::integer
    from steward.worker_status w
   cross join lateral pg_catalog.jsonb_to_recordset(w.schedules)
         as s(identifier text, task text, pattern text, payload jsonb, source text)
   where w.is_alive and w.schedules is not null
   group by s.identifier, s.task, s.pattern, s.payload, s.source
   order by s.identifier, s.pattern
$$;
comment on function steward.worker_schedules() is
  'The cron schedules the live workers report (one row per distinct schedule; workers: how many live pools run it; graphile-worker runs each tick once however many do). Workers of a version that does not report schedules are left out: see steward.worker_status.schedules.';

-- Functions are the owner's (and the worker's, which runs as the owner) unless granted.
revoke all on function steward.worker_heartbeat(text, text, integer, text[], jsonb), steward.worker_schedules() from public;
