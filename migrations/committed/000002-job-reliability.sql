--! Previous: sha1:5c4a6a2a84d97ae95eecc31d813a07e126ca02c0
--! Hash: sha1:2799e057207b06d75e79c3ae74d4ff5f9a08533f
--! Message: job reliability

-- Job reliability: the dead-letter queue (and the trigger that moves a job there in the same
-- transaction as its final failure), permanent errors, worker heartbeats that let a dead
-- worker's jobs come back within seconds, and per-day job statistics kept by the worker.

-- The triggers below sit on graphile-worker's private tables, which its authors may change in a
-- minor release. They were written for schema versions 18 (0.16), 19 (0.17) and 20 (0.18, whose
-- migration 000020 replaces add_job and add_jobs but keeps how a running job is superseded):
-- refuse anything else, here and whenever steward migrate installs them again.
create function steward.check_graphile_worker_schema()
returns integer
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  version integer;
begin
  if pg_catalog.to_regclass('graphile_worker.migrations') is null then
    raise exception 'graphile-worker''s schema is not installed, and pg-steward''s triggers sit on its tables'
      using errcode = 'P0001',
            hint = 'Run `steward migrate`, which installs graphile-worker''s schema before these migrations.';
  end if;
  select max(m.id) into version from graphile_worker.migrations m;
  if version is null or version not in (18, 19, 20) then
    raise exception 'pg-steward''s triggers on graphile-worker''s tables were written for graphile-worker schema versions 18 to 20 (graphile-worker 0.16 to 0.18); this database has version %', version
      using errcode = 'P0001',
            hint = 'Install the graphile-worker version pg-steward depends on (steward migrate does), or upgrade pg-steward to a release written for this graphile-worker.';
  end if;
  return version;
end
$$;
comment on function steward.check_graphile_worker_schema() is
  'Returns the graphile-worker schema version, or raises when it is missing or one pg-steward''s triggers on graphile-worker''s private tables (dead letters, named-queue wake-up) were not written for.';

select steward.check_graphile_worker_schema();

-- Dead letters -----------------------------------------------------------------------------------

insert into steward.settings (name, value, type, description) values
  ('dead_letters.replayed_retention', '30 days', 'interval',
   'How long cleanup keeps a dead letter after it was replayed. Dead letters never replayed are kept until purged by hand (steward dlq purge).')
on conflict (name) do nothing;

create table steward.dead_letters (
  id              bigint generated always as identity primary key,
  source          text not null check (source in ('job', 'invalidation')),
  task_identifier text,
  payload         jsonb not null default '{}'::jsonb,
  queue_name      text,
  attempts        integer not null,
  max_attempts    integer not null,
  last_error      text,
  original_id     bigint,
  failed_at       timestamptz not null default pg_catalog.now(),
  replayed_at     timestamptz,
  -- Beyond the SPEC's columns: what a replay or a person needs to know.
  replayed_as     bigint,
  is_permanent    boolean not null default false,
  job_key         text,
  priority        integer,
  flags           text[],
  enqueued_at     timestamptz,
  check (source <> 'job' or task_identifier is not null),
  check ((replayed_at is null) = (replayed_as is null))
);
-- Keyset pages of list_dead_letters (newest first) and purges by age.
create index dead_letters_failed_at_idx on steward.dead_letters (failed_at, id);
-- `steward run --wait` finds the dead letter of the job it waits for.
create index dead_letters_original_id_idx on steward.dead_letters (original_id) where source = 'job';

comment on table steward.dead_letters is
  'Work that failed for good: graphile-worker jobs that failed their last attempt or threw a permanent error (source job), and invalidations that ran out of attempts (source invalidation). Nothing leaves it but by replay_dead_letter (which keeps the row, marked replayed), purge_dead_letters, or cleanup of replayed rows.';
comment on column steward.dead_letters.source is 'job: a graphile-worker job; invalidation: an entry of the invalidation queue.';
comment on column steward.dead_letters.task_identifier is 'The graphile-worker task of a job.';
comment on column steward.dead_letters.payload is 'The job''s payload; for an invalidation, {"tag": ...}.';
comment on column steward.dead_letters.attempts is 'Attempts made, the failing one included.';
comment on column steward.dead_letters.max_attempts is 'Attempts the job was allowed (before a permanent error cut it short); a replay gets as many.';
comment on column steward.dead_letters.last_error is 'Why the last attempt failed.';
comment on column steward.dead_letters.original_id is 'The job id (graphile_worker.jobs.id) or invalidation id it came from.';
comment on column steward.dead_letters.failed_at is 'When it failed for good.';
comment on column steward.dead_letters.replayed_at is 'When replay_dead_letter queued it again; null while not replayed.';
comment on column steward.dead_letters.replayed_as is 'The id of the job (or invalidation) the replay created.';
comment on column steward.dead_letters.is_permanent is 'The task threw a permanent error (bad payload, unknown entity): it got one attempt, not max_attempts.';
comment on column steward.dead_letters.job_key is 'The job key it had. A replay does not reuse it: by then it may name a newer job.';
comment on column steward.dead_letters.enqueued_at is 'When the original job was created.';

-- Notes on running jobs whose failure means something else than a dead job.
create table steward.job_marks (
  job_id       bigint primary key,
  reason       text not null check (reason in ('superseded', 'permanent')),
  max_attempts integer,
  error        text,
  marked_at    timestamptz not null default pg_catalog.now()
);
comment on table steward.job_marks is
  'Running jobs whose coming failure is not an ordinary dead job: superseded (add_job with its key, or remove_job, while it ran: its failure is dropped, the newer job carries on) or permanent (the task threw a permanent error: it is dead-lettered after this attempt, keeping its real max_attempts). Used and removed by the dead-letter trigger; orphans are removed by cleanup.';

-- graphile-worker's job row (_private_jobs) as a dead letter. Only the trigger calls it.
create function steward.move_failed_job()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  mark steward.job_marks;
  error text := new.last_error;
begin
  if new.locked_at is not null then
    -- add_job with this job's key (or remove_job) while it runs: graphile-worker clears the key
    -- and exhausts its attempts so it will not run again. If it fails now, it was not dead.
    insert into steward.job_marks (job_id, reason) values (new.id, 'superseded')
    on conflict (job_id) do update set reason = 'superseded', marked_at = pg_catalog.now();
    return null;
  end if;

  delete from steward.job_marks m where m.job_id = new.id returning m.* into mark;
  if mark.reason = 'superseded' then
    delete from graphile_worker._private_jobs j where j.id = new.id;
    return null;
  end if;

  if mark.reason = 'permanent' then
    error := coalesce(mark.error, error);
  elsif old.locked_at is not null and new.run_at <= pg_catalog.now() then
    -- graphile-worker's failJobs always pushes run_at into the future; an unlock that does not
    -- is force_unlock_workers or the stale-lock sweep: no error was reported for this attempt.
    error := pg_catalog.format('the worker running attempt %s (%s) stopped without reporting an outcome; its lock was released',
               new.attempts, old.locked_by)
             || coalesce('; the attempt before failed with: ' || old.last_error, '');
  end if;

  insert into steward.dead_letters
    (source, task_identifier, payload, queue_name, attempts, max_attempts, last_error, original_id,
     is_permanent, job_key, priority, flags, enqueued_at)
  select 'job', t.identifier, new.payload::jsonb, q.queue_name, new.attempts,
         coalesce(mark.max_attempts, new.max_attempts), error, new.id,
         coalesce(mark.reason = 'permanent', false), new.key, new.priority,
         (select pg_catalog.array_agg(f order by f) from pg_catalog.jsonb_object_keys(new.flags) f),
         new.created_at
    from graphile_worker._private_tasks t
    left join graphile_worker._private_job_queues q on q.id = new.job_queue_id
   where t.id = new.task_id;
  -- Out of graphile-worker's table: its key is free for the next add_job.
  delete from graphile_worker._private_jobs j where j.id = new.id;
  return null;
end
$$;
comment on function steward.move_failed_job() is
  'Trigger on graphile_worker._private_jobs: moves a job that failed for good (its last attempt failed, permanently_fail_jobs, a lock released on its last attempt, a permanent error) into steward.dead_letters in the same transaction, and deletes it from graphile-worker''s table. A job superseded by add_job with its key while running is not a dead letter.';

create function steward.install_dead_letter_trigger()
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if exists (select from pg_catalog.pg_trigger t
              where t.tgrelid = 'graphile_worker._private_jobs'::regclass and t.tgname = '_steward_dead_letters') then
    return false;
  end if;
  perform steward.check_graphile_worker_schema();
  -- The common paths cost a WHEN test: success deletes the row (no UPDATE), a lock or an
  -- ordinary failure leaves attempts below max_attempts.
  create trigger _steward_dead_letters
    after update on graphile_worker._private_jobs
    for each row
    when ((new.locked_at is null and new.attempts >= new.max_attempts
           and (old.locked_at is not null or old.attempts < old.max_attempts))
       or (new.locked_at is not null and old.key is not null and new.key is null
           and new.attempts >= new.max_attempts))
    execute function steward.move_failed_job();
  comment on trigger _steward_dead_letters on graphile_worker._private_jobs is
    'pg-steward: moves jobs that failed for good into steward.dead_letters (steward.move_failed_job).';
  return true;
end
$$;
comment on function steward.install_dead_letter_trigger() is
  'Installs the dead-letter trigger on graphile_worker._private_jobs unless it is there; true when it installed it. steward migrate calls it on every run, so a graphile-worker upgrade that re-creates the job table gets it back. Refuses a graphile-worker schema version the trigger was not written for.';

select steward.install_dead_letter_trigger();

-- Jobs that already failed for good before this migration move too.
with moved as (
  delete from graphile_worker._private_jobs j
   where j.locked_at is null and j.attempts >= j.max_attempts
  returning j.*
)
insert into steward.dead_letters
  (source, task_identifier, payload, queue_name, attempts, max_attempts, last_error, original_id,
   job_key, priority, flags, enqueued_at)
select 'job', t.identifier, moved.payload::jsonb, q.queue_name, moved.attempts, moved.max_attempts,
       moved.last_error, moved.id, moved.key, moved.priority,
       (select pg_catalog.array_agg(f order by f) from pg_catalog.jsonb_object_keys(moved.flags) f),
       moved.created_at
  from moved
  join graphile_worker._private_tasks t on t.id = moved.task_id
  left join graphile_worker._private_job_queues q on q.id = moved.job_queue_id
 order by moved.id;

create function steward.fail_job_permanently(job_id bigint, pool_id text, error text)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  job record;
begin
  select j.id, j.max_attempts into job
    from graphile_worker._private_jobs j
   where j.id = fail_job_permanently.job_id and j.locked_by = fail_job_permanently.pool_id
     for update;
  if not found then
    return false;
  end if;
  insert into steward.job_marks (job_id, reason, max_attempts, error)
  values (job.id, 'permanent', job.max_attempts, fail_job_permanently.error)
  on conflict on constraint job_marks_pkey do nothing;
  update graphile_worker._private_jobs j set max_attempts = j.attempts where j.id = job.id;
  return true;
end
$$;
comment on function steward.fail_job_permanently(bigint, text, text) is
  'Called by the worker before it reports a permanent error: the running job (locked by pool_id) gets no further attempt, so the failure that follows moves it to the dead letters, with this error and its original max_attempts. False when the job is not locked by that pool.';

create function steward.replay_dead_letter(id bigint)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  letter steward.dead_letters;
  new_id bigint;
begin
  if replay_dead_letter.id is null then
    raise exception 'replay_dead_letter needs the id of a dead letter' using errcode = '22004';
  end if;
  select * into letter from steward.dead_letters d where d.id = replay_dead_letter.id for update;
  if not found then
    raise exception 'dead letter % does not exist', replay_dead_letter.id
      using errcode = 'P0002', hint = 'steward dlq list (or select * from steward.list_dead_letters()) shows them.';
  end if;
  if letter.replayed_at is not null then
    raise exception 'dead letter % was already replayed at % (as %)', letter.id, letter.replayed_at, letter.replayed_as
      using errcode = 'P0001',
            hint = 'A dead letter is replayed once. If the replay failed too, it is a dead letter of its own: steward dlq list.';
  end if;

  if letter.source = 'job' then
    -- No job key: by now it may name a newer job, which a replay must not replace.
    select j.id into new_id
      from graphile_worker.add_job(
             identifier => letter.task_identifier,
             payload => letter.payload::json,
             queue_name => letter.queue_name,
             max_attempts => letter.max_attempts,
             priority => letter.priority,
             flags => letter.flags) j;
  else
    if pg_catalog.to_regprocedure('steward.enqueue_invalidation(text, interval)') is null then
      raise exception 'dead letter % is an invalidation, and steward.enqueue_invalidation is not installed', letter.id
        using errcode = 'P0001', hint = 'Apply the cache-invalidation migration (steward migrate), then replay again.';
    end if;
    if letter.payload ->> 'tag' is null then
      raise exception 'dead letter % is an invalidation without a tag in its payload: %', letter.id, letter.payload
        using errcode = '22023';
    end if;
    new_id := steward.enqueue_invalidation(letter.payload ->> 'tag', interval '0 seconds');
  end if;

  update steward.dead_letters d set replayed_at = pg_catalog.now(), replayed_as = new_id where d.id = letter.id;
  perform steward.audit('replay_dead_letter', pg_catalog.format('dead_letter:%s', letter.id),
    pg_catalog.jsonb_build_object('source', letter.source, 'task', letter.task_identifier,
      'original_id', letter.original_id, 'new_id', new_id));
  return new_id;
end
$$;
comment on function steward.replay_dead_letter(bigint) is
  'Queues a dead letter again, once: a job becomes a new graphile-worker job (same task, payload, queue, priority, flags and max_attempts; no job key) and its id is returned; an invalidation re-queues its tag and returns the pending entry''s id. The dead letter stays, marked replayed. Audited. A missing or already replayed id is an error and changes nothing.';

create function steward.purge_dead_letters(older_than interval)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  purged bigint;
begin
  if older_than is null then
    raise exception 'purge_dead_letters needs an age: dead letters that failed longer ago than it are deleted'
      using errcode = '22004', hint = 'For example: select steward.purge_dead_letters(''30 days'');';
  end if;
  if older_than < interval '0' then
    raise exception 'purge_dead_letters: older_than must not be negative, got %', older_than
      using errcode = '22023';
  end if;
  delete from steward.dead_letters d where d.failed_at < pg_catalog.now() - older_than;
  get diagnostics purged = row_count;
  perform steward.audit('purge_dead_letters', null,
    pg_catalog.jsonb_build_object('older_than', older_than::text, 'purged', purged));
  return purged;
end
$$;
comment on function steward.purge_dead_letters(interval) is
  'Deletes the dead letters that failed longer ago than older_than, replayed or not, and returns how many. Audited.';

create function steward.list_dead_letters(after text default null, max integer default 50)
returns table (
  id bigint, source text, task_identifier text, payload jsonb, queue_name text, attempts integer,
  max_attempts integer, last_error text, original_id bigint, failed_at timestamptz,
  replayed_at timestamptz, replayed_as bigint, is_permanent boolean, cursor text
)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  after_at timestamptz;
  after_id bigint;
begin
  if max is null or max < 1 or max > 1000 then
    raise exception 'list_dead_letters: max must be from 1 to 1000, got %', coalesce(max::text, 'null')
      using errcode = '22023';
  end if;
  if after is not null then
    if after !~ '^[0-9]{1,19}:[0-9]{1,19}$' then
      raise exception 'list_dead_letters: "%" is not a cursor', after
        using errcode = '22023', hint = 'Pass the cursor column of the last row of the previous page, or null for the first page.';
    end if;
    after_at := timestamptz 'epoch' + pg_catalog.split_part(after, ':', 1)::bigint * interval '1 microsecond';
    after_id := pg_catalog.split_part(after, ':', 2)::bigint;
  end if;
  return query
    select d.id, d.source, d.task_identifier, d.payload, d.queue_name, d.attempts, d.max_attempts,
           d.last_error, d.original_id, d.failed_at, d.replayed_at, d.replayed_as, d.is_permanent,
           pg_catalog.format('%s:%s', (extract(epoch from d.failed_at) * 1000000)::bigint, d.id)
      from steward.dead_letters d
     where after is null or (d.failed_at, d.id) < (after_at, after_id)
     order by d.failed_at desc, d.id desc
     limit max;
end
$$;
comment on function steward.list_dead_letters(text, integer) is
  'Dead letters, newest first, at most max (1 to 1000) per page. Pass the cursor of a page''s last row as after for the next page; keyset paging, so a page costs the same at any depth.';

create function steward.cleanup_dead_letters(batch_size integer)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with gone as (
    delete from steward.dead_letters d
     where d.id in (select r.id from steward.dead_letters r
                     where r.replayed_at < pg_catalog.now() - steward.setting_interval('dead_letters.replayed_retention')
                     limit batch_size)
    returning 1
  )
  select pg_catalog.count(*) from gone;
$$;
comment on function steward.cleanup_dead_letters(integer) is
  'Cleanup step: deletes at most batch_size dead letters replayed longer ago than dead_letters.replayed_retention. Never-replayed ones stay until purged.';

create function steward.cleanup_job_marks(batch_size integer)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with gone as (
    delete from steward.job_marks m
     where m.job_id in (select r.job_id from steward.job_marks r
                         where not exists (select from graphile_worker._private_jobs j where j.id = r.job_id)
                         limit batch_size)
    returning 1
  )
  select pg_catalog.count(*) from gone;
$$;
comment on function steward.cleanup_job_marks(integer) is
  'Cleanup step: deletes at most batch_size job marks whose job is gone (a superseded job that then succeeded).';

insert into steward.cleanup_steps (name, function, description) values
  ('dead_letters', 'steward.cleanup_dead_letters(integer)', 'replayed dead letters past dead_letters.replayed_retention'),
  ('job_marks', 'steward.cleanup_job_marks(integer)', 'marks of jobs that no longer exist')
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

-- Worker heartbeats and crash recovery ----------------------------------------------------------

insert into steward.settings (name, value, type, description) values
  ('workers.heartbeat_timeout', '60 seconds', 'interval',
   'A worker whose last heartbeat is older than this is presumed dead: its locked jobs are unlocked so another worker runs them. Workers beat every sixth of it. Keep it well above the longest event-loop stall of a worker.')
on conflict (name) do nothing;

create table steward.workers (
  pool_id      text primary key,
  host         text,
  pid          integer,
  started_at   timestamptz not null default pg_catalog.now(),
  heartbeat_at timestamptz not null default pg_catalog.now()
);
comment on table steward.workers is
  'One row per running steward worker pool (graphile-worker''s pool id, the locked_by of its jobs), refreshed by its heartbeat. A row older than the workers.heartbeat_timeout setting marks a dead worker; release_dead_workers unlocks its jobs. Plain graphile-worker processes have no row and are never touched.';

create function steward.worker_heartbeat(pool_id text, host text default null, pid integer default null)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if pool_id is null then
    raise exception 'worker_heartbeat needs a pool id' using errcode = '22004';
  end if;
  update steward.workers w set heartbeat_at = pg_catalog.now() where w.pool_id = worker_heartbeat.pool_id;
  if found then
    return true;
  end if;
  insert into steward.workers (pool_id, host, pid) values (pool_id, host, pid)
  on conflict on constraint workers_pkey do update set heartbeat_at = pg_catalog.now();
  return false;
end
$$;
comment on function steward.worker_heartbeat(text, text, integer) is
  'A worker pool''s heartbeat: refreshes its row, or creates it. Returns false when there was no row: the first beat, or the pool was presumed dead and its jobs released.';

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
  select pg_catalog.count(*) into leftover
    from graphile_worker._private_jobs j where j.locked_by = unregister_worker.pool_id;
  if leftover > 0 then
    perform graphile_worker.force_unlock_workers(array[pool_id]);
  end if;
  delete from steward.workers w where w.pool_id = unregister_worker.pool_id;
  return leftover;
end
$$;
comment on function steward.unregister_worker(text) is
  'A worker pool stopping cleanly: unlocks any job it still holds (normally none) and removes its heartbeat row. Returns how many jobs it unlocked.';

-- Job statistics ---------------------------------------------------------------------------------

insert into steward.settings (name, value, type, description) values
  ('job_stats.retention', '400 days', 'interval',
   'How long cleanup keeps the per-day job statistics (steward.job_stats).')
on conflict (name) do nothing;

create table steward.job_stat_counts (
  task      text not null,
  day       date not null,
  completed bigint not null default 0,
  failed    bigint not null default 0,
  retried   bigint not null default 0,
  total_ms  double precision not null default 0,
  primary key (task, day)
);
comment on table steward.job_stat_counts is
  'Attempts per task and UTC day, added up by the workers every few seconds (steward.record_job_stats). Read steward.job_stats.';

create table steward.job_stat_durations (
  task     text not null,
  day      date not null,
  bucket   smallint not null,
  attempts bigint not null,
  primary key (task, day, bucket)
);
comment on table steward.job_stat_durations is
  'Histogram of attempt durations per task and UTC day: bucket b counts attempts of 2^(b/4) to 2^((b+1)/4) milliseconds (each bucket 19 % wide). Histograms add up exactly across workers and flushes, which percentiles do not.';

create function steward.record_job_stats(batch jsonb)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  -- Rows are upserted in key order, so two workers flushing at once never deadlock.
  insert into steward.job_stat_counts as c (task, day, completed, failed, retried, total_ms)
  select r.task, r.day, coalesce(r.completed, 0), coalesce(r.failed, 0), coalesce(r.retried, 0), coalesce(r.total_ms, 0)
    from pg_catalog.jsonb_to_recordset(batch)
         as r(task text, day date, completed bigint, failed bigint, retried bigint, total_ms double precision)
   order by r.task, r.day
  on conflict (task, day) do update
     set completed = c.completed + excluded.completed,
         failed = c.failed + excluded.failed,
         retried = c.retried + excluded.retried,
         total_ms = c.total_ms + excluded.total_ms;
  insert into steward.job_stat_durations as d (task, day, bucket, attempts)
  select r.task, r.day, b.key::smallint, b.value::bigint
    from pg_catalog.jsonb_to_recordset(batch) as r(task text, day date, durations jsonb),
         pg_catalog.jsonb_each_text(coalesce(r.durations, '{}'::jsonb)) as b
   order by r.task, r.day, b.key::smallint
  on conflict (task, day, bucket) do update set attempts = d.attempts + excluded.attempts;
$$;
comment on function steward.record_job_stats(jsonb) is
  'Adds a worker''s counters to the statistics: a JSON array of {task, day, completed, failed, retried, total_ms, durations: {bucket: attempts}}. One call per flush, not one per job.';

create view steward.job_stats as
select c.task, c.day, c.completed, c.failed, c.retried,
       case when c.completed + c.failed + c.retried > 0
            then round((c.total_ms / (c.completed + c.failed + c.retried))::numeric, 3) end as avg_ms,
       p.p95_ms
  from steward.job_stat_counts c
  left join lateral (
    select round(pg_catalog.power(2, (h.bucket + 0.5) / 4.0)::numeric, 3) as p95_ms
      from (select d.bucket,
                   sum(d.attempts) over (order by d.bucket) as running,
                   sum(d.attempts) over () as total
              from steward.job_stat_durations d
             where d.task = c.task and d.day = c.day) h
     where h.running >= ceil(0.95 * h.total)
     order by h.bucket
     limit 1
  ) p on true;
comment on view steward.job_stats is
  'Per task and UTC day: completed (attempts that succeeded), failed (jobs that failed for good in a worker: last attempt or permanent error), retried (failed attempts that will be retried), avg_ms and p95_ms over all those attempts. p95_ms comes from a histogram, within 9 %. Kept by the workers in batches; a worker that crashes loses its last few seconds of counts. Jobs dead-lettered without a worker reporting (crash on the last attempt, permanently_fail_jobs) are in steward.dead_letters, not in failed.';

create function steward.cleanup_job_stats(batch_size integer)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with cutoff as (
    select (pg_catalog.now() at time zone 'UTC' - steward.setting_interval('job_stats.retention'))::date as day
  ), counts as (
    delete from steward.job_stat_counts c
     where (c.task, c.day) in (select r.task, r.day from steward.job_stat_counts r, cutoff
                                where r.day < cutoff.day limit batch_size)
    returning 1
  ), durations as (
    delete from steward.job_stat_durations d
     where (d.task, d.day, d.bucket) in (select r.task, r.day, r.bucket from steward.job_stat_durations r, cutoff
                                          where r.day < cutoff.day limit batch_size)
    returning 1
  )
  select greatest((select pg_catalog.count(*) from counts), (select pg_catalog.count(*) from durations));
$$;
comment on function steward.cleanup_job_stats(integer) is
  'Cleanup step: deletes at most batch_size rows of each job statistics table older than job_stats.retention.';

insert into steward.cleanup_steps (name, function, description) values
  ('job_stats', 'steward.cleanup_job_stats(integer)', 'job statistics past job_stats.retention')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
