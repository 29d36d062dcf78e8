-- Which indexes are never used, and which tables are read mostly by sequential scans? Counts are
-- since the statistics were last reset (shown first); run it after a representative period.
-- Unused indexes cost every write and take space: drop them (after checking replicas, which keep
-- their own counts). Large tables read by sequential scans usually lack an index.
-- psql "$DATABASE_URL" -f sql/index-usage.sql
select stats_reset as statistics_since from pg_catalog.pg_stat_database where datname = current_database();

\echo 'Indexes never scanned (unique and primary key indexes excluded: they enforce constraints)'
select s.schemaname                                           as schema,
       s.relname                                              as table,
       s.indexrelname                                         as index,
       pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(s.indexrelid)) as size,
       s.idx_scan                                             as scans
  from pg_catalog.pg_stat_user_indexes s
  join pg_catalog.pg_index i on i.indexrelid = s.indexrelid
 where s.idx_scan = 0
   and not i.indisunique
   and not exists (select from pg_catalog.pg_constraint c where c.conindid = s.indexrelid)
 order by pg_catalog.pg_relation_size(s.indexrelid) desc
 limit 30;

\echo 'Tables over 10,000 rows read more by sequential scans than by index scans'
select s.schemaname                                           as schema,
       s.relname                                              as table,
       s.n_live_tup                                           as live_rows,
       s.seq_scan,
       s.seq_tup_read                                         as rows_read_by_seq_scans,
       coalesce(s.idx_scan, 0)                                as idx_scan,
       round(s.seq_tup_read::numeric / nullif(s.seq_scan, 0)) as rows_per_seq_scan,
       pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(s.relid)) as size
  from pg_catalog.pg_stat_user_tables s
 where s.n_live_tup > 10000
   and s.seq_scan > coalesce(s.idx_scan, 0)
 order by s.seq_tup_read desc
 limit 30;
