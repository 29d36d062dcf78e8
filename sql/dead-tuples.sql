-- Which tables carry the most dead rows, is autovacuum keeping up with them, and is any table
-- getting close to transaction-ID wraparound? "vacuum_due" means the dead rows passed the
-- table's autovacuum threshold (threshold + scale_factor x rows, per-table settings respected)
-- and autovacuum has not got to it yet; a table due for long points at a blocker (a long
-- transaction, an idle-in-transaction session, or too few autovacuum workers). Queue tables
-- (graphile_worker's and ours) churn the most.
-- psql "$DATABASE_URL" -f sql/dead-tuples.sql
\echo 'Tables by dead rows'
select s.schemaname                                                    as schema,
       s.relname                                                       as table,
       s.n_live_tup                                                    as live_rows,
       s.n_dead_tup                                                    as dead_rows,
       round(100.0 * s.n_dead_tup / nullif(s.n_live_tup + s.n_dead_tup, 0), 1) as dead_pct,
       t.threshold::bigint                                             as autovacuum_threshold,
       s.n_dead_tup > t.threshold                                      as vacuum_due,
       greatest(s.last_autovacuum, s.last_vacuum)                      as last_vacuum,
       date_trunc('second', now() - greatest(s.last_autovacuum, s.last_vacuum)) as since_vacuum,
       s.autovacuum_count,
       pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size(s.relid)) as total_size
  from pg_catalog.pg_stat_user_tables s
  join pg_catalog.pg_class c on c.oid = s.relid
  cross join lateral (
    select coalesce((select o.option_value::numeric from pg_catalog.pg_options_to_table(c.reloptions) o
                      where o.option_name = 'autovacuum_vacuum_threshold'),
                    current_setting('autovacuum_vacuum_threshold')::numeric)
         + coalesce((select o.option_value::numeric from pg_catalog.pg_options_to_table(c.reloptions) o
                      where o.option_name = 'autovacuum_vacuum_scale_factor'),
                    current_setting('autovacuum_vacuum_scale_factor')::numeric) * greatest(c.reltuples, 0) as threshold
  ) t
 where s.n_dead_tup > 0
 order by s.n_dead_tup desc
 limit 30;

\echo 'Vacuums running now'
select p.pid, p.relid::regclass as table, p.phase, p.heap_blks_scanned, p.heap_blks_total,
       date_trunc('second', now() - a.xact_start) as running_for, a.query
  from pg_catalog.pg_stat_progress_vacuum p
  join pg_catalog.pg_stat_activity a on a.pid = p.pid;

\echo 'What holds back vacuum: the oldest open transactions'
select a.pid, a.usename, a.application_name, a.state, date_trunc('second', now() - a.xact_start) as open_for,
       left(regexp_replace(a.query, '\s+', ' ', 'g'), 120) as query
  from pg_catalog.pg_stat_activity a
 where a.xact_start is not null and a.pid <> pg_catalog.pg_backend_pid()
 order by a.xact_start
 limit 5;

\echo 'Transaction-ID age (autovacuum forces a freeze at autovacuum_freeze_max_age; trouble comes near 2 billion)'
select c.oid::regclass                                         as table,
       pg_catalog.age(c.relfrozenxid)                          as xid_age,
       round(100.0 * pg_catalog.age(c.relfrozenxid) / current_setting('autovacuum_freeze_max_age')::numeric, 1) as pct_of_freeze_max_age
  from pg_catalog.pg_class c
 where c.relkind in ('r', 'm', 't') and c.relfrozenxid <> '0'::xid
 order by pg_catalog.age(c.relfrozenxid) desc
 limit 10;
