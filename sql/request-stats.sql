-- Which endpoints were slowest, failed or were rate limited most, over the last 24 hours, and
-- is the request rollup keeping up? From steward.request_stats_hourly (filled by the rollup_requests task).
-- Percentiles cannot be added across hours, so the table shows the worst hour's p95 and p99.
-- psql "$DATABASE_URL" -f sql/request-stats.sql
\echo 'Endpoints over the last 24 hours, slowest worst-hour p95 first'
select s.endpoint,
       s.method,
       sum(s.requests)                                                    as requests,
       sum(s.errors)                                                      as errors,
       round(100.0 * sum(s.errors) / nullif(sum(s.requests), 0), 2)       as error_pct,
       round(100.0 * sum(s.rate_limited) / nullif(sum(s.requests), 0), 2) as rate_limited_pct,
       round(100.0 * sum(s.cache_hits) / nullif(sum(s.requests), 0), 1)   as cache_hit_pct,
       round(max(s.p95_ms)::numeric, 1)                                   as worst_hour_p95_ms,
       round(max(s.p99_ms)::numeric, 1)                                   as worst_hour_p99_ms,
       round((sum(s.p50_ms * s.requests) / nullif(sum(s.requests), 0))::numeric, 1) as weighted_p50_ms
  from steward.request_stats_hourly s
 where s.bucket >= now() - interval '24 hours'
 group by s.endpoint, s.method
 order by max(s.p95_ms) desc
 limit 30;

\echo 'Rollup backlog: 5-minute buckets with rows not rolled up yet (more than a few minutes old means the worker is not running rollup_requests)'
select count(distinct (p.bucket, p.endpoint, p.method)) as pending_buckets,
       min(p.bucket)                                     as oldest_pending_bucket,
       (select count(*) from steward.request_rollup_dirty_hours) as hours_to_refresh
  from steward.request_rollup_pending p;

\echo 'Raw request partitions (one per UTC day)'
select c.relname as partition, pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size(c.oid)) as size,
       greatest(c.reltuples, 0)::bigint as estimated_rows
  from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
 where i.inhparent = 'steward.requests'::regclass
 order by c.relname;
