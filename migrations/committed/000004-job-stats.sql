--! Previous: sha1:a749bdf095e7d850e8ec75b4bb72e093c202f5fa
--! Hash: sha1:0c077dbb7538966bb77f2115d0c826ead26f337b
--! Message: job stats

-- Job statistics: completed, failed and retried attempts per task and UTC day, with their
-- durations as a histogram, kept by the workers in batches (not one row per job).

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('job_stats.retention', '400 days', 'interval', '1 day', '3650 days',
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
  -- The cutoff is the start of the first UTC day still kept, as a timestamptz: delete_older_than
  -- compares the day column with it in the session's time zone, as it converts the cutoff back,
  -- so exactly the earlier days go.
  with cutoff as (
    select ((pg_catalog.now() at time zone 'UTC' - steward.setting_interval('job_stats.retention'))::date)::timestamptz as at
  )
  select greatest(steward.delete_older_than('steward.job_stat_counts', 'day', cutoff.at, batch_size),
                  steward.delete_older_than('steward.job_stat_durations', 'day', cutoff.at, batch_size))
    from cutoff;
$$;
comment on function steward.cleanup_job_stats(integer) is
  'Cleanup step: deletes at most batch_size rows of each job statistics table older than job_stats.retention.';

insert into steward.cleanup_steps (name, function, description) values
  ('job_stats', 'steward.cleanup_job_stats(integer)', 'job statistics past job_stats.retention')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- The queue on /metrics ---------------------------------------------------------------------------

create function steward.queue_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'steward_queue_depth', 'gauge',
         'Jobs in graphile-worker''s queue by task and state (steward.job_states(): ready, scheduled, running, retrying, failed).',
         pg_catalog.jsonb_build_object('task', j.task_identifier, 'state', j.state),
         pg_catalog.count(*)::float8
    from steward.job_states() j
   group by j.task_identifier, j.state
$$;
comment on function steward.queue_metrics() is
  'Metric source of the job queue: steward_queue_depth{task,state}, states as steward.job_states() defines them.';

insert into steward.metric_sources (name, function, description) values
  ('queue', 'steward.queue_metrics()', 'jobs in graphile-worker''s queue by task and state')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
