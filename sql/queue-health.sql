-- Is the job queue healthy? Jobs of graphile-worker by task and state, how long the oldest ready
-- job has been waiting (ready jobs that wait mean too few workers or a stuck one), and jobs
-- locked for longer than their task should ever run (a crashed worker keeps its jobs locked
-- until graphile-worker's 4-hour sweep, or graphile_worker.force_unlock_workers()).
-- psql "$DATABASE_URL" -f sql/queue-health.sql
\echo 'Jobs by task and state'
select j.task_identifier                                              as task,
       case when j.locked_at is not null then 'running'
            when j.attempts >= j.max_attempts then 'failed for good'
            when j.run_at > now() and j.attempts > 0 then 'retry scheduled'
            when j.run_at > now() then 'scheduled'
            else 'ready' end                                          as state,
       count(*)                                                       as jobs,
       date_trunc('second', now() - min(j.run_at) filter (where j.run_at <= now() and j.locked_at is null))
                                                                      as oldest_ready_waiting,
       max(j.attempts)                                                as max_attempts_so_far,
       min(j.run_at)                                                  as earliest_run_at
  from graphile_worker.jobs j
 group by 1, 2
 order by 1, 2;

\echo 'The oldest ready job'
select j.id, j.task_identifier as task, j.queue_name, j.run_at, date_trunc('second', now() - j.run_at) as waiting,
       j.attempts, j.max_attempts, left(j.last_error, 120) as last_error
  from graphile_worker.jobs j
 where j.locked_at is null and j.run_at <= now() and j.attempts < j.max_attempts
 order by j.run_at
 limit 1;

\echo 'Jobs locked for over 15 minutes (a crashed or stuck worker?)'
select j.id, j.task_identifier as task, j.locked_by, j.locked_at, date_trunc('second', now() - j.locked_at) as locked_for, j.attempts
  from graphile_worker.jobs j
 where j.locked_at < now() - interval '15 minutes'
 order by j.locked_at;

\echo 'Workers seen in the last hour (by the jobs they locked)'
select j.locked_by as worker, count(*) as running_jobs, min(j.locked_at) as since
  from graphile_worker.jobs j
 where j.locked_by is not null
 group by 1
 order by 3;
