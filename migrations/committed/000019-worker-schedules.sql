--! Previous: sha1:66a81a0de72daffa6a1f87f720b4338dfb377e45
--! Hash: sha1:9723d14be3d7722ac6fc273a2dad572d2e514005
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

-- The previous version's form, now the same heartbeat without schedules: one upsert serves both.
create or replace function steward.worker_heartbeat(pool_id text, host text default null, pid integer default null,
                                                    tasks text[] default null)
returns boolean
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select steward.worker_heartbeat(pool_id, host, pid, tasks, null::jsonb)
$$;
comment on function steward.worker_heartbeat(text, text, integer, text[]) is
  'A worker pool''s heartbeat without schedules (the form workers before steward.workers.schedules call): steward.worker_heartbeat(pool_id, host, pid, tasks, null), keeping the schedules its row has.';

create or replace view steward.worker_status as
select w.pool_id, w.host, w.pid, w.started_at, w.heartbeat_at,
       w.heartbeat_at >= pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout') as is_alive,
       w.tasks,
       w.schedules
  from steward.workers w;

-- Elements that are not objects are skipped and missing keys are null: a worker that reports
-- something else (another version, a bug) must not break steward status for the whole fleet.
create or replace function steward.worker_schedules()
returns table (identifier text, task text, pattern text, payload jsonb, source text, workers integer)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select e.item ->> 'identifier', e.item ->> 'task', e.item ->> 'pattern',
         nullif(e.item -> 'payload', 'null'::jsonb), e.item ->> 'source', pg_catalog.count(*)::integer
    from steward.worker_status w
   cross join lateral pg_catalog.jsonb_array_elements(w.schedules) as e(item)
   where w.is_alive and pg_catalog.jsonb_typeof(w.schedules) = 'array'
     and pg_catalog.jsonb_typeof(e.item) = 'object'
   group by 1, 2, 3, 4, 5
   order by 1, 3
$$;

comment on function steward.worker_schedules() is
  'The cron schedules the live workers report (one row per distinct schedule; workers: how many live pools run it; graphile-worker runs each tick once however many do). Workers of a version that does not report schedules are left out: see steward.worker_status.schedules.';

-- Functions are the owner's (and the worker's, which runs as the owner) unless granted.
revoke all on function steward.worker_heartbeat(text, text, integer, text[], jsonb), steward.worker_schedules() from public;
