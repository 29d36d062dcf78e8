-- Which statements cost the database the most time? The top 20 by total execution time, and the
-- top 20 by mean time among those called at least 50 times, from pg_stat_statements (since its
-- last reset). Without the extension it says how to get it and stops.
-- psql "$DATABASE_URL" -f sql/slow-statements.sql
select exists (select from pg_catalog.pg_extension where extname = 'pg_stat_statements') as has_pg_stat_statements,
       coalesce((select extnamespace::regnamespace::text from pg_catalog.pg_extension where extname = 'pg_stat_statements'), 'public')
         as pg_stat_statements_schema \gset
\if :has_pg_stat_statements
\echo 'Top 20 statements by total execution time'
select round(s.total_exec_time::numeric / 1000, 1)                      as total_s,
       s.calls,
       round(s.mean_exec_time::numeric, 2)                              as mean_ms,
       round(s.stddev_exec_time::numeric, 2)                            as stddev_ms,
       s.rows,
       round(100.0 * s.shared_blks_hit / nullif(s.shared_blks_hit + s.shared_blks_read, 0), 1) as cache_hit_pct,
       s.userid::regrole                                                as role,
       left(regexp_replace(s.query, '\s+', ' ', 'g'), 160)              as query
  from :"pg_stat_statements_schema".pg_stat_statements s
 order by s.total_exec_time desc
 limit 20;

\echo 'Top 20 statements by mean execution time (called at least 50 times)'
select round(s.mean_exec_time::numeric, 2)                              as mean_ms,
       round(s.max_exec_time::numeric, 2)                               as max_ms,
       s.calls,
       round(s.total_exec_time::numeric / 1000, 1)                      as total_s,
       left(regexp_replace(s.query, '\s+', ' ', 'g'), 160)              as query
  from :"pg_stat_statements_schema".pg_stat_statements s
 where s.calls >= 50
 order by s.mean_exec_time desc
 limit 20;
\else
\echo 'pg_stat_statements is not installed in this database, so per-statement timings are not available.'
\echo 'To enable it: add pg_stat_statements to shared_preload_libraries (restart needed; hosted Postgres usually has it),'
\echo 'then run: create extension pg_stat_statements;   Meanwhile sql/index-usage.sql shows tables read by sequential scans.'
\endif
