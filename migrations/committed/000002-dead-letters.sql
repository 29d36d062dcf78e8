--! Previous: sha1:d9829f20119019ca320fc2fbef6b707ecdd64b63
--! Hash: sha1:5af65df3091b527a176960bd29b95549fce92e83
--! Message: dead letters

-- The dead-letter queue: a job that fails for good moves there in the same transaction as its
-- final failure (a trigger on graphile-worker's job table), as does a job whose task threw a
-- permanent error; replay, purge and a keyset listing; the cleanup of replayed letters.

-- The triggers pg-steward puts on graphile-worker's private tables (dead letters here, the named-
-- queue wake-up in 000003) depend on tables its authors may change in a minor release. They were
-- written for schema versions 18 (0.16), 19 (0.17) and 20 (0.18, whose migration 000020 replaces
-- add_job and add_jobs but keeps how a running job is superseded): refuse anything else, here and
-- whenever steward migrate installs them again.
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

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('dead_letters.replayed_retention', '30 days', 'interval', '1 hour', '3650 days',
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

create function steward.move_failed_jobs()
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  moved bigint;
begin
  -- A permanent error's mark (left while the trigger was off) keeps its error and real attempts.
  with moved as (
    delete from graphile_worker._private_jobs j
     where j.locked_at is null and j.attempts >= j.max_attempts
    returning j.*
  ), marks as (
    delete from steward.job_marks m using moved where m.job_id = moved.id returning m.*
  )
  insert into steward.dead_letters
    (source, task_identifier, payload, queue_name, attempts, max_attempts, last_error, original_id,
     is_permanent, job_key, priority, flags, enqueued_at)
  select 'job', t.identifier, moved.payload::jsonb, q.queue_name, moved.attempts,
         coalesce(marks.max_attempts, moved.max_attempts), coalesce(marks.error, moved.last_error), moved.id,
         coalesce(marks.reason = 'permanent', false), moved.key, moved.priority,
         (select pg_catalog.array_agg(f order by f) from pg_catalog.jsonb_object_keys(moved.flags) f),
         moved.created_at
    from moved
    join graphile_worker._private_tasks t on t.id = moved.task_id
    left join graphile_worker._private_job_queues q on q.id = moved.job_queue_id
    left join marks on marks.job_id = moved.id
   order by moved.id;
  get diagnostics moved = row_count;
  return moved;
end
$$;
comment on function steward.move_failed_jobs() is
  'Moves the jobs that failed for good while no dead-letter trigger was there to see it (before pg-steward was installed, or while it was switched off) from graphile-worker''s table into steward.dead_letters; returns how many.';

-- Jobs that already failed for good before this migration move too.
select steward.move_failed_jobs();

-- The switch ----------------------------------------------------------------------------------------

create function steward.disable_dead_letters()
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  was_enabled boolean;
begin
  select t.tgenabled <> 'D' into was_enabled
    from pg_catalog.pg_trigger t
   where t.tgrelid = 'graphile_worker._private_jobs'::regclass and t.tgname = '_steward_dead_letters';
  if not found then
    raise exception 'the dead-letter trigger is not installed' using errcode = 'P0002',
      hint = 'steward migrate installs it; select steward.enable_dead_letters() does too.';
  end if;
  alter table graphile_worker._private_jobs disable trigger _steward_dead_letters;
  perform steward.audit('disable_dead_letters', 'graphile_worker._private_jobs',
    pg_catalog.jsonb_build_object('was_enabled', was_enabled));
  return was_enabled;
end
$$;
comment on function steward.disable_dead_letters() is
  'Switches the dead-letter trigger off without uninstalling: jobs that fail for good stay in graphile-worker''s table, as without pg-steward, until enable_dead_letters. Returns whether it was on; audited. Needs the owner of graphile-worker''s tables.';

create function steward.enable_dead_letters()
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  moved bigint;
begin
  perform steward.install_dead_letter_trigger();
  alter table graphile_worker._private_jobs enable trigger _steward_dead_letters;
  moved := steward.move_failed_jobs();
  perform steward.audit('enable_dead_letters', 'graphile_worker._private_jobs',
    pg_catalog.jsonb_build_object('moved', moved));
  return moved;
end
$$;
comment on function steward.enable_dead_letters() is
  'Switches the dead-letter trigger on again (installing it if missing) and moves the jobs that failed for good while it was off into steward.dead_letters; returns how many it moved. Audited.';

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

insert into steward.cleanup_steps (name, target, time_column, retention_setting, description) values
  ('dead_letters', 'steward.dead_letters', 'replayed_at', 'dead_letters.replayed_retention',
   'replayed dead letters past dead_letters.replayed_retention')
on conflict (name) do update set function = excluded.function, target = excluded.target,
  time_column = excluded.time_column, retention_setting = excluded.retention_setting,
  description = excluded.description;

insert into steward.cleanup_steps (name, function, description) values
  ('job_marks', 'steward.cleanup_job_marks(integer)', 'marks of jobs that no longer exist')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Job states ------------------------------------------------------------------------------------
-- What state a graphile-worker job is in, defined once: /metrics (queue depth), steward.status(),
-- sql/queue-health.sql and `steward run --wait` all read it from here.

-- A function rather than a view: a view on graphile_worker.jobs would be a dependency that stops
-- a graphile-worker upgrade from re-creating its view (graphile-worker #388); a function body is
-- not. It is plain SQL without SET clauses so the planner inlines it: `where id = …` or
-- `where task_identifier = …` on it uses graphile-worker's indexes.
create function steward.job_states()
returns table (
  id bigint, task_identifier text, queue_name text, state text, priority smallint, run_at timestamptz,
  attempts smallint, max_attempts smallint, last_error text, key text, locked_at timestamptz,
  locked_by text, created_at timestamptz
)
language sql
stable
as $$
  select j.id, j.task_identifier, j.queue_name,
         case when j.locked_at is not null then 'running'
              when j.attempts >= j.max_attempts then 'failed'
              when j.run_at > pg_catalog.now() and j.attempts > 0 then 'retrying'
              when j.run_at > pg_catalog.now() then 'scheduled'
              else 'ready' end,
         j.priority, j.run_at, j.attempts, j.max_attempts, j.last_error, j.key, j.locked_at,
         j.locked_by, j.created_at
    from graphile_worker.jobs j
$$;
comment on function steward.job_states() is
  'Every job of graphile-worker''s queue with its state: running (locked by a worker), ready (due; a retry that is due again included), scheduled (run_at in the future, never attempted), retrying (failed, waiting for its next attempt), failed (out of attempts and not running: it will never run again; normally such a job is already a dead letter). The one definition of job state.';

create function steward.job_outcome(job_id bigint)
returns table (state text, attempts integer, max_attempts integer, last_error text, is_running boolean,
               dead_letter_id bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- One statement, so a job moving from graphile-worker's table to the dead letters is seen in
  -- one of them.
  select coalesce(found.state, 'completed'), found.attempts, found.max_attempts, found.last_error,
         coalesce(found.is_running, false), found.dead_letter_id
    from (select 1) as one
    left join lateral (
      select case when j.state = 'failed' then 'failed' else 'pending' end as state, j.attempts::integer as attempts,
             j.max_attempts::integer as max_attempts, j.last_error, j.state = 'running' as is_running,
             null::bigint as dead_letter_id
        from steward.job_states() j
       where j.id = job_id
      union all
      select 'failed', d.attempts, d.max_attempts, d.last_error, false, d.id
        from steward.dead_letters d
       where d.source = 'job' and d.original_id = job_id
      limit 1
    ) as found on true;
$$;
comment on function steward.job_outcome(bigint) is
  'Where a job stands: pending (queued, running or waiting for a retry), failed (a dead letter, whose id is given, or out of attempts in graphile-worker''s table), or completed (gone from both: graphile-worker deletes a job when it succeeds). For `steward run --wait` and applications waiting for a job.';

-- Dead letters: one, and on /metrics --------------------------------------------------------------

create function steward.dead_letter(id bigint)
returns setof steward.dead_letters
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select d.* from steward.dead_letters d where d.id = dead_letter.id
$$;
comment on function steward.dead_letter(bigint) is
  'One dead letter with everything kept about it (none when the id is unknown): `steward dlq show`.';

create function steward.dead_letter_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'steward_dead_letters', 'gauge',
         'Dead letters not yet replayed, by source (job, invalidation) and task.',
         pg_catalog.jsonb_build_object('source', d.source, 'task', coalesce(d.task_identifier, '')),
         pg_catalog.count(*)::float8
    from steward.dead_letters d
   where d.replayed_at is null
   group by d.source, d.task_identifier
  union all
  select 'steward_dead_letters_last_failed_timestamp_seconds', 'gauge',
         'When the newest dead letter not yet replayed failed (Unix time), by source and task: an alert compares it with time() to tell that dead letters keep arriving.',
         pg_catalog.jsonb_build_object('source', d.source, 'task', coalesce(d.task_identifier, '')),
         extract(epoch from pg_catalog.max(d.failed_at))::float8
    from steward.dead_letters d
   where d.replayed_at is null
   group by d.source, d.task_identifier
$$;
comment on function steward.dead_letter_metrics() is
  'Metric source of the dead-letter queue: steward_dead_letters{source,task} and steward_dead_letters_last_failed_timestamp_seconds{source,task}.';

insert into steward.metric_sources (name, function, description) values
  ('dead_letters', 'steward.dead_letter_metrics()', 'dead letters not replayed, and when the newest failed')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
