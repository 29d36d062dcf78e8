--! Previous: sha1:03beeb1f3080d78de6aee60724807b7f944c5ff7
--! Hash: sha1:fcd122ba50178d46e9d801f84076caff776d831a
--! Message: cleanup

-- Cleanup of rows past their retention: the steps registered in steward.cleanup_steps (each
-- capability registers its own), run in bounded batches by the cleanup task (tasks/cleanup.ts),
-- and the retention of the audit log.

-- Settings -------------------------------------------------------------------------------------

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('maintenance.cleanup_batch_size', '1000', 'integer', '1', '100000',
   'Rows a cleanup step deletes per batch; each batch is its own short transaction.'),
  ('maintenance.cleanup_time_budget', '5 minutes', 'interval', '0 seconds', '1 day',
   'A cleanup run starts no further batch of a step after this long (every step still gets its first batch).'),
  ('maintenance.audit_log_retention', '365 days', 'interval', '1 day', '3650 days',
   'How long rows of steward.audit_log are kept.')
on conflict (name) do nothing;

-- Cleanup --------------------------------------------------------------------------------------

insert into steward.cleanup_steps (name, target, time_column, retention_setting, description) values
  ('audit_log', 'steward.audit_log', 'at', 'maintenance.audit_log_retention',
   'audit_log rows past maintenance.audit_log_retention')
on conflict (name) do update set function = excluded.function, target = excluded.target,
  time_column = excluded.time_column, retention_setting = excluded.retention_setting,
  description = excluded.description;

create function steward.run_cleanup_step(step text, batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  entry steward.cleanup_steps;
  call text;
  deleted bigint;
begin
  select * into entry from steward.cleanup_steps s where s.name = step;
  if not found then
    raise exception 'unknown cleanup step "%"', step
      using errcode = 'P0002', hint = 'select name, description from steward.cleanup_steps lists them.';
  end if;
  if entry.target is not null then
    return steward.delete_older_than(entry.target, entry.time_column,
      pg_catalog.now() - steward.setting_interval(entry.retention_setting), batch_size);
  end if;
  select pg_catalog.format('select %I.%I($1)', n.nspname, p.proname) into call
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
   where p.oid = entry.function;
  if not found then
    raise exception 'the function of cleanup step "%" no longer exists', step
      using errcode = 'P0002', hint = 'steward verify lists such steps; re-create the function, or delete the step from steward.cleanup_steps.';
  end if;
  execute call using batch_size into deleted;
  return coalesce(deleted, 0);
end
$$;
comment on function steward.run_cleanup_step(text, integer) is
  'Runs one batch of a registered cleanup step and returns how many rows it deleted: for a plain step, steward.delete_older_than on its table with its retention setting; else its function. The cleanup task calls it (each call its own transaction) until it returns fewer than batch_size.';

create function steward.cleanup_step_names()
returns setof text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select s.name from steward.cleanup_steps s order by s.name
$$;
comment on function steward.cleanup_step_names() is
  'The registered cleanup steps, in the order the cleanup task runs them (by name).';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
