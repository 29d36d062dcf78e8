-- Which versions are installed? pg-steward's last applied migration, graphile-worker's schema
-- version, the server version, and whether pg_stat_statements is available.
-- psql "$DATABASE_URL" -f sql/installed-versions.sql
select (select max(filename) from graphile_migrate.migrations)   as steward_migration,
       (select max(id) from graphile_worker.migrations)            as graphile_worker_schema,
       current_setting('server_version')                           as postgres,
       exists (select from pg_extension where extname = 'pg_stat_statements') as pg_stat_statements;
