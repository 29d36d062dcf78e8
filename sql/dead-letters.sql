-- Which tasks are failing for good? Dead letters (jobs and invalidations that ran out of
-- attempts) by source and task: how many, how many not yet replayed, the first and the last
-- failure, and the last error. Replay one with `steward dlq replay <id>`.
-- psql "$DATABASE_URL" -f sql/dead-letters.sql
select pg_catalog.to_regclass('steward.dead_letters') is not null as has_dead_letters \gset
\if :has_dead_letters
select d.source,
       d.task_identifier                                         as task,
       count(*)                                                  as dead_letters,
       count(*) filter (where d.replayed_at is null)             as not_replayed,
       min(d.failed_at)                                          as first_failed_at,
       max(d.failed_at)                                          as last_failed_at,
       (array_agg(left(d.last_error, 160) order by d.failed_at desc))[1] as last_error
  from steward.dead_letters d
 group by d.source, d.task_identifier
 order by count(*) filter (where d.replayed_at is null) desc, max(d.failed_at) desc;

\echo 'Dead letters of the last 24 hours by hour'
select date_trunc('hour', d.failed_at) as hour, d.task_identifier as task, count(*) as dead_letters
  from steward.dead_letters d
 where d.failed_at > now() - interval '24 hours'
 group by 1, 2
 order by 1 desc, 3 desc;
\else
\echo 'steward.dead_letters does not exist: this database has not migrated the dead-letter queue yet (steward migrate).'
\endif
