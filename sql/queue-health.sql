-- Is the job queue healthy? Jobs of graphile-worker by task and state (as steward.job_states()
-- defines them, the same states as /metrics and `steward status`), how long the oldest ready job
-- has been waiting (ready jobs that wait mean too few workers or a stuck one), and jobs locked
-- for longer than their task should ever run (a crashed worker keeps its jobs locked until the
-- heartbeat sweep, or graphile-worker's 4-hour sweep for workers without a heartbeat row).
-- psql "$DATABASE_URL" -f sql/queue-health.sql
\echo 'Jobs by task and state'
select j.task_identifier                                              as task,
       j.state,
       count(*)                                                       as jobs,
       date_trunc('second', now() - min(j.run_at) filter (where j.state = 'ready'))
                                                                      as oldest_ready_waiting,
       max(j.attempts)                                                as max_attempts_so_far,
       min(j.run_at)                                                  as earliest_run_at
  from steward.job_states() j
 group by 1, 2
 order by 1, 2;

\echo 'The oldest ready job'
select j.id, j.task_identifier as task, j.queue_name, j.run_at, date_trunc('second', now() - j.run_at) as waiting,
       j.attempts, j.max_attempts, left(j.last_error, 120) as last_error
  from steward.job_states() j
 where j.state = 'ready'
 order by j.run_at
 limit 1;

\echo 'Jobs locked for over 15 minutes (a crashed or stuck worker?)'
select j.id, j.task_identifier as task, j.locked_by, w.host, w.pid, w.is_alive as worker_alive, j.locked_at,
       date_trunc('second', now() - j.locked_at) as locked_for, j.attempts
  from steward.job_states() j
  left join steward.worker_status w on w.pool_id = j.locked_by
 where j.state = 'running' and j.locked_at < now() - interval '15 minutes'
 order by j.locked_at;

\echo 'Workers seen in the last hour (by the jobs they locked)'
select j.locked_by as worker, count(*) as running_jobs, min(j.locked_at) as since
  from steward.job_states() j
 where j.state = 'running'
 group by 1
 order by 3;
