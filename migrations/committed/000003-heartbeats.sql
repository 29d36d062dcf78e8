--! Previous: sha1:5af65df3091b527a176960bd29b95549fce92e83
--! Hash: sha1:a749bdf095e7d850e8ec75b4bb72e093c202f5fa
--! Message: heartbeats

-- Worker heartbeats and crash recovery: every worker pool keeps a row of steward.workers fresh,
-- and a pool whose heartbeat goes stale is presumed dead: its jobs are unlocked within seconds
-- for another worker, instead of after graphile-worker's 4-hour stale-lock sweep.

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('workers.heartbeat_timeout', '60 seconds', 'interval', '1 second', '1 day',
   'A worker whose last heartbeat is older than this is presumed dead: its locked jobs are unlocked so another worker runs them. Workers beat every sixth of it. Keep it well above the longest event-loop stall of a worker.')
on conflict (name) do nothing;

create table steward.workers (
  pool_id      text primary key,
  host         text,
  pid          integer,
  started_at   timestamptz not null default pg_catalog.now(),
  heartbeat_at timestamptz not null default pg_catalog.now(),
  tasks        text[] not null default '{}'
);
comment on table steward.workers is
  'One row per running steward worker pool (graphile-worker''s pool id, the locked_by of its jobs), refreshed by its heartbeat. A row older than the workers.heartbeat_timeout setting marks a dead worker; release_dead_workers unlocks its jobs. Plain graphile-worker processes have no row and are never touched.';
comment on column steward.workers.tasks is
  'The task identifiers the pool runs (built-ins and the team''s own), as its last heartbeat reported them: a job whose identifier no live pool lists waits for nobody (steward.unserved_jobs).';

create function steward.worker_heartbeat(pool_id text, host text default null, pid integer default null,
                                         tasks text[] default null)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if pool_id is null then
    raise exception 'worker_heartbeat needs a pool id' using errcode = '22004';
  end if;
  update steward.workers w set heartbeat_at = pg_catalog.now(), tasks = coalesce(worker_heartbeat.tasks, w.tasks)
   where w.pool_id = worker_heartbeat.pool_id;
  if found then
    return true;
  end if;
  insert into steward.workers (pool_id, host, pid, tasks) values (pool_id, host, pid, coalesce(tasks, '{}'))
  on conflict on constraint workers_pkey do update set heartbeat_at = pg_catalog.now(), tasks = excluded.tasks;
  return false;
end
$$;
comment on function steward.worker_heartbeat(text, text, integer, text[]) is
  'A worker pool''s heartbeat: refreshes its row (and the task identifiers it runs, when given), or creates it. Returns false when there was no row: the first beat, or the pool was presumed dead and its jobs released.';

create function steward.release_dead_workers()
returns table (pool_id text, host text, pid integer, last_heartbeat_at timestamptz, released_jobs bigint)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  timeout interval := greatest(steward.setting_interval('workers.heartbeat_timeout'), interval '1 second');
  dead steward.workers;
begin
  -- SKIP LOCKED: several workers sweeping at once share the dead rows instead of waiting.
  for dead in
    select * from steward.workers w where w.heartbeat_at < pg_catalog.now() - timeout for update skip locked
  loop
    select pg_catalog.count(*) into released_jobs
      from graphile_worker._private_jobs j where j.locked_by = dead.pool_id;
    -- Jobs on their last attempt fail for good here, and the trigger dead-letters them.
    perform graphile_worker.force_unlock_workers(array[dead.pool_id]);
    delete from steward.workers w where w.pool_id = dead.pool_id;
    perform steward.audit('release_dead_worker', dead.pool_id,
      pg_catalog.jsonb_build_object('host', dead.host, 'pid', dead.pid, 'last_heartbeat_at', dead.heartbeat_at,
        'released_jobs', released_jobs, 'heartbeat_timeout', timeout::text));
    if released_jobs > 0 then
      -- Wake idle workers now rather than at their next poll (graphile-worker's own channel).
      perform pg_catalog.pg_notify('jobs:insert', pg_catalog.json_build_object('count', released_jobs)::text);
    end if;
    pool_id := dead.pool_id;
    host := dead.host;
    pid := dead.pid;
    last_heartbeat_at := dead.heartbeat_at;
    return next;
  end loop;
end
$$;
comment on function steward.release_dead_workers() is
  'Crash recovery, run by every worker on its heartbeat: for each worker pool whose heartbeat is older than the workers.heartbeat_timeout setting, unlocks its jobs (graphile_worker.force_unlock_workers) so another worker runs them, removes its row and audits it. Jobs on their last attempt go to the dead letters. Pools without a row (plain graphile-worker) are never touched.';

create function steward.unregister_worker(pool_id text)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  leftover bigint;
begin
  -- A clean stop has finished every job it started, or failed it (an attempt counted), before
  -- it unregisters: what it still holds was fetched ahead and never run (graphile-worker's local
  -- queue cannot hand those back once released). They are returned as graphile-worker's own
  -- returnJobs does, their attempt given back: a job with max_attempts 1 would otherwise never
  -- run at all.
  with returned as (
    update graphile_worker._private_jobs as j
       set attempts = greatest(0, j.attempts - 1), locked_by = null, locked_at = null
     where j.locked_by = unregister_worker.pool_id
    returning j.id
  )
  select pg_catalog.count(*) into leftover from returned;
  update graphile_worker._private_job_queues as q
     set locked_by = null, locked_at = null
   where q.locked_by = unregister_worker.pool_id;
  delete from steward.workers w where w.pool_id = unregister_worker.pool_id;
  return leftover;
end
$$;
comment on function steward.unregister_worker(text) is
  'A worker pool stopping cleanly, after its running jobs finished or failed: hands back the jobs it still holds (fetched ahead, never run) with their attempt returned, as graphile-worker''s returnJobs does, unlocks its named queues and removes its heartbeat row. Returns how many jobs it handed back.';

create view steward.worker_status as
select w.pool_id, w.host, w.pid, w.started_at, w.heartbeat_at,
       w.heartbeat_at >= pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout') as is_alive,
       w.tasks
  from steward.workers w;
comment on view steward.worker_status is
  'Worker pools with a heartbeat row and whether each is alive (its last heartbeat is within workers.heartbeat_timeout; a stale one is about to be released by the next sweep). The one definition of a live worker.';

-- Unserved jobs: graphile-worker only fetches the identifiers a worker knows, so a job for a task
-- no worker runs waits forever without an error. Every pool reports its identifiers on its
-- heartbeat, which makes that visible.
create function steward.unserved_jobs()
returns table (task_identifier text, jobs bigint, oldest_run_at timestamptz)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with served as (
    select coalesce(pg_catalog.array_agg(distinct t.task), '{}') as tasks
      from steward.worker_status w
     cross join lateral pg_catalog.unnest(w.tasks) as t(task)
     where w.is_alive
  )
  select j.task_identifier, pg_catalog.count(*), pg_catalog.min(j.run_at)
    from steward.job_states() j, served s
   where j.state = 'ready' and j.task_identifier <> all (s.tasks)
   group by j.task_identifier
   order by j.task_identifier
$$;
comment on function steward.unserved_jobs() is
  'Jobs that are due (state ready in steward.job_states()) for a task identifier no live steward worker runs (none lists it in steward.workers.tasks), by identifier: they wait until a worker that knows the task starts. With no live worker, every due job is here. Jobs meant for another fleet (plain graphile-worker processes, which have no heartbeat row) are listed too.';

create function steward.unserved_job_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'steward_jobs_unserved', 'gauge',
         'Due jobs whose task identifier no live steward worker runs (they wait until one does), by task.',
         pg_catalog.jsonb_build_object('task', u.task_identifier), u.jobs::float8
    from steward.unserved_jobs() u
$$;
comment on function steward.unserved_job_metrics() is
  'Metric source of unserved jobs: steward_jobs_unserved{task}, one series per identifier with due jobs no live worker runs (none when every due job has a worker).';

create function steward.worker_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- Both states always, 0 when none: "no live worker" is a value, not a missing series.
  select 'steward_workers', 'gauge',
         'Steward worker pools with a heartbeat row, by state (alive; stale: past workers.heartbeat_timeout, about to be released).',
         pg_catalog.jsonb_build_object('state', s.state),
         (select pg_catalog.count(*) from steward.worker_status w
           where w.is_alive = (s.state = 'alive'))::float8
    from (values ('alive'), ('stale')) as s(state)
$$;
comment on function steward.worker_metrics() is
  'Metric source of worker heartbeats: steward_workers{state} (alive, stale), both always present.';

insert into steward.metric_sources (name, function, description) values
  ('workers', 'steward.worker_metrics()', 'worker pools alive and stale, from their heartbeats'),
  ('unserved_jobs', 'steward.unserved_job_metrics()', 'due jobs for task identifiers no live worker runs')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Named queues: wake the workers when one is free again -----------------------------------------

-- With the local queue (the worker's default), a worker fetches jobs in batches, at most one per
-- named queue, and fetches again only when its batch is used up, when graphile-worker announces
-- new jobs, or at its next poll (2 s). A named queue's next job becomes available when the one
-- before it completes, which announces nothing: a queue of 50 jobs on an otherwise idle worker
-- took 50 polls. Announcing the unlock on graphile-worker's own channel makes every worker fetch
-- now, as it does for a new job.
create function steward.announce_unlocked_queue()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- One notification per transaction whatever the number of queues: identical ones are merged.
  perform pg_catalog.pg_notify('jobs:insert', '{"count":1}');
  return null;
end
$$;
comment on function steward.announce_unlocked_queue() is
  'Trigger on graphile_worker._private_job_queues: when a named queue is unlocked (its job completed, failed, was handed back or released), announces it on graphile-worker''s jobs:insert channel so idle workers fetch its next job now instead of at their next poll.';

create function steward.install_queue_wakeup_trigger()
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if exists (select from pg_catalog.pg_trigger t
              where t.tgrelid = 'graphile_worker._private_job_queues'::regclass and t.tgname = '_steward_queue_wakeup') then
    return false;
  end if;
  perform steward.check_graphile_worker_schema();
  create trigger _steward_queue_wakeup
    after update of locked_by on graphile_worker._private_job_queues
    for each row
    when (old.locked_by is not null and new.locked_by is null)
    execute function steward.announce_unlocked_queue();
  comment on trigger _steward_queue_wakeup on graphile_worker._private_job_queues is
    'pg-steward: announces an unlocked named queue on jobs:insert (steward.announce_unlocked_queue).';
  return true;
end
$$;
comment on function steward.install_queue_wakeup_trigger() is
  'Installs the named-queue wake-up trigger on graphile_worker._private_job_queues unless it is there; true when it installed it. steward migrate calls it on every run, like install_dead_letter_trigger. Refuses a graphile-worker schema version it was not written for.';

select steward.install_queue_wakeup_trigger();

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
