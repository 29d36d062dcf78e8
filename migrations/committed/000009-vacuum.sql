--! Previous: sha1:72d49a4f12fff68f5d2112c9f7ccb5f32e3c2cfb
--! Hash: sha1:03beeb1f3080d78de6aee60724807b7f944c5ff7
--! Message: vacuum

-- VACUUM: the plan of which tables to vacuum (past dead-tuple thresholds, queue tables first) and
-- the log of maintenance runs. The vacuum_tables task (tasks/vacuum_tables.ts) runs the plan one
-- table at a time outside any transaction; a DBA may call these functions too.

-- Settings -------------------------------------------------------------------------------------

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('maintenance.vacuum_min_dead_tuples', '10000', 'integer', '1', '2147483647',
   'Dead tuples (pg_stat_user_tables.n_dead_tup) a table needs before vacuum_tables picks it; a table outside the queue schemas must also pass maintenance.vacuum_min_dead_ratio.'),
  ('maintenance.vacuum_min_dead_ratio', '0.1', 'numeric', '0', '1',
   'Share of a table''s rows (live + dead) its dead tuples must also reach before vacuum_tables picks it, besides maintenance.vacuum_min_dead_tuples. Queue tables (schemas steward and graphile_worker) need the count only.'),
  ('maintenance.vacuum_time_budget', '1 hour', 'interval', '0 seconds', '7 days',
   'A vacuum_tables run starts no new table after this long; the rest wait for the next run.'),
  ('maintenance.vacuum_statement_timeout', '2 hours', 'interval', '1 millisecond', '7 days',
   'statement_timeout of one VACUUM.'),
  ('maintenance.vacuum_buffer_usage_limit', '', 'size', '128kB', '16GB',
   'BUFFER_USAGE_LIMIT of VACUUM (e.g. 16MB) on PostgreSQL 16 and later; empty: the server''s vacuum_buffer_usage_limit. Ignored before 16.'),
  ('maintenance.lock_timeout', '5 seconds', 'interval', '1 millisecond', '1 hour',
   'lock_timeout of VACUUM and of each cleanup batch.'),
  ('maintenance.log_retention', '30 days', 'interval', '1 hour', '3650 days',
   'How long rows of steward.maintenance_log are kept.')
on conflict (name) do nothing;

-- VACUUM ---------------------------------------------------------------------------------------

create table steward.maintenance_log (
  id          bigint generated always as identity primary key,
  action      text not null check (action in ('vacuum', 'cleanup')),
  what        text not null,
  started_at  timestamptz not null,
  duration_ms double precision not null,
  status      text not null check (status in ('ok', 'failed', 'skipped')),
  detail      jsonb not null default '{}'::jsonb
);
create index maintenance_log_started_at_idx on steward.maintenance_log (started_at);
comment on table steward.maintenance_log is
  'One row per table vacuumed (action vacuum, what: the table) and per cleanup step run (action cleanup, what: the step): status ok, failed or skipped (a VACUUM that found the table locked).';

create function steward.record_maintenance(
  action text, what text, started_at timestamptz, duration_ms double precision, status text, detail jsonb default '{}'
)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  insert into steward.maintenance_log (action, what, started_at, duration_ms, status, detail)
  values (action, what, started_at, duration_ms, status, coalesce(detail, '{}'::jsonb));
$$;
comment on function steward.record_maintenance(text, text, timestamptz, double precision, text, jsonb) is
  'Appends a row to steward.maintenance_log (the vacuum_tables and cleanup tasks call it).';

create function steward.may_vacuum(target regclass)
returns boolean
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select c.relpersistence <> 't'
     and (pg_catalog.pg_has_role(c.relowner, 'USAGE')
          or (not c.relisshared
              and pg_catalog.pg_has_role((select d.datdba from pg_catalog.pg_database d
                                           where d.datname = pg_catalog.current_database()), 'USAGE'))
          -- MAINTAIN (PostgreSQL 17) is not a privilege name before 17; the case keeps it unasked.
          or case when pg_catalog.current_setting('server_version_num')::integer >= 170000
                  then pg_catalog.has_table_privilege(c.oid, 'MAINTAIN') else false end)
    from pg_catalog.pg_class c
   where c.oid = target
$$;
comment on function steward.may_vacuum(regclass) is
  'Whether the current role may VACUUM the relation (owner, database owner, or MAINTAIN on PostgreSQL 17+); never another session''s temporary table.';

create function steward.vacuum_options()
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'ANALYZE, SKIP_LOCKED'
    || case when pg_catalog.current_setting('server_version_num')::integer >= 160000
             and steward.setting('maintenance.vacuum_buffer_usage_limit') <> ''
            -- In kB: VACUUM reads memory units case-sensitively (16MB), pg_size_bytes does not (16mb).
            then pg_catalog.format(', BUFFER_USAGE_LIMIT ''%skB''',
                   pg_catalog.pg_size_bytes(steward.setting('maintenance.vacuum_buffer_usage_limit')) / 1024)
            else '' end
$$;
comment on function steward.vacuum_options() is
  'The options vacuum_tables passes to VACUUM on this server: ANALYZE, SKIP_LOCKED, and BUFFER_USAGE_LIMIT on PostgreSQL 16+ when the setting is not empty.';

create function steward.vacuum_plan(tables regclass[] default null)
returns table (
  target text,
  is_queue_table boolean,
  dead_tuples bigint,
  live_tuples bigint,
  reason text,
  statement text
)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  min_dead bigint := steward.setting_integer('maintenance.vacuum_min_dead_tuples');
  min_ratio numeric := steward.setting('maintenance.vacuum_min_dead_ratio')::numeric;
  options text := steward.vacuum_options();
  item record;
begin
  if tables is null then
    return query
      select pg_catalog.format('%I.%I', s.schemaname, s.relname),
             s.schemaname in ('steward', 'graphile_worker'),
             s.n_dead_tup, s.n_live_tup,
             'dead tuples',
             pg_catalog.format('VACUUM (%s) %I.%I', options, s.schemaname, s.relname)
        from pg_catalog.pg_stat_user_tables s
       where s.n_dead_tup >= min_dead
         and (s.schemaname in ('steward', 'graphile_worker')
              or s.n_dead_tup >= min_ratio * (s.n_live_tup + s.n_dead_tup))
         and steward.may_vacuum(s.relid)
       order by s.schemaname in ('steward', 'graphile_worker') desc, s.n_dead_tup desc, 1;
    return;
  end if;

  for item in
    select t.relation, c.relkind, pg_catalog.format('%I.%I', n.nspname, c.relname) as name,
           n.nspname in ('steward', 'graphile_worker') as is_queue_table, min(t.ordinal) as ordinal
      from pg_catalog.unnest(tables) with ordinality as t(relation, ordinal)
      left join pg_catalog.pg_class c on c.oid = t.relation
      left join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     group by 1, 2, 3, 4
     order by ordinal
  loop
    if item.relation is null or item.name is null then
      raise exception 'vacuum_plan: tables must name existing tables, got %', coalesce(item.relation::oid::text, 'null')
        using errcode = '22023';
    end if;
    if item.relkind not in ('r', 'm', 'p') then
      raise exception '% is not a table (it is %)', item.name, steward.relation_kind_name(item.relkind)
        using errcode = '22023', hint = 'VACUUM takes tables, partitioned tables and materialized views.';
    end if;
    if not steward.may_vacuum(item.relation) then
      raise exception 'role % may not vacuum %', current_user, item.name
        using errcode = '22023',
              hint = 'VACUUM needs the table''s owner or the database owner (or the MAINTAIN privilege on PostgreSQL 17+).';
    end if;
    target := item.name;
    is_queue_table := item.is_queue_table;
    select s.n_dead_tup, s.n_live_tup into dead_tuples, live_tuples
      from pg_catalog.pg_stat_all_tables s where s.relid = item.relation;
    reason := 'requested';
    statement := pg_catalog.format('VACUUM (%s) %s', options, item.name);
    return next;
  end loop;
end
$$;
comment on function steward.vacuum_plan(regclass[]) is
  'The tables vacuum_tables vacuums, in order, with the VACUUM statement for each. With no list: tables of pg_stat_user_tables past both dead-tuple thresholds (settings maintenance.vacuum_min_dead_tuples and vacuum_min_dead_ratio; queue tables of schemas steward and graphile_worker need the count only), queue tables first, then by dead tuples. With a list: those tables, checked (22023 for anything the role cannot vacuum).';

insert into steward.cleanup_steps (name, target, time_column, retention_setting, description) values
  ('maintenance_log', 'steward.maintenance_log', 'started_at', 'maintenance.log_retention',
   'maintenance_log rows past maintenance.log_retention')
on conflict (name) do update set function = excluded.function, target = excluded.target,
  time_column = excluded.time_column, retention_setting = excluded.retention_setting,
  description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
