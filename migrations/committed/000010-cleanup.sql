--! Previous: sha1:30775ca3ad9e6d14b4318d0df1b0ec8f512f9778
--! Hash: sha1:1417558e9f25d8f65a45883171cbed685ccfecbe
--! Message: cleanup

-- Cleanup of rows past their retention: the steps registered in steward.cleanup_steps (each
-- capability registers its own), run in bounded batches by the cleanup task (tasks/cleanup.ts),
-- and the retention of the audit log.

-- Settings -------------------------------------------------------------------------------------

insert into steward.settings (name, value, type, description) values
  ('maintenance.cleanup_batch_size', '1000', 'integer',
   'Rows a cleanup step deletes per batch; each batch is its own short transaction.'),
  ('maintenance.cleanup_time_budget', '5 minutes', 'interval',
   'A cleanup run starts no further batch of a step after this long (every step still gets its first batch).'),
  ('maintenance.audit_log_retention', '365 days', 'interval',
   'How long rows of steward.audit_log are kept.')
on conflict (name) do nothing;

-- Cleanup --------------------------------------------------------------------------------------

create function steward.cleanup_audit_log(batch_size integer)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select steward.delete_older_than('steward.audit_log', 'at',
    pg_catalog.now() - steward.setting_interval('maintenance.audit_log_retention'), batch_size)
$$;
comment on function steward.cleanup_audit_log(integer) is
  'Cleanup step: deletes at most batch_size rows of steward.audit_log older than maintenance.audit_log_retention.';

insert into steward.cleanup_steps (name, function, description) values
  ('audit_log', 'steward.cleanup_audit_log(integer)', 'audit_log rows past maintenance.audit_log_retention')
on conflict (name) do update set function = excluded.function, description = excluded.description;

create function steward.run_cleanup_step(step text, batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  call text;
  deleted bigint;
begin
  select pg_catalog.format('select %I.%I($1)', n.nspname, p.proname) into call
    from steward.cleanup_steps s
    join pg_catalog.pg_proc p on p.oid = s.function
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
   where s.name = step;
  if not found then
    raise exception 'unknown cleanup step "%"', step
      using errcode = 'P0002', hint = 'select name, description from steward.cleanup_steps lists them.';
  end if;
  execute call using batch_size into deleted;
  return coalesce(deleted, 0);
end
$$;
comment on function steward.run_cleanup_step(text, integer) is
  'Runs one batch of a registered cleanup step and returns how many rows it deleted; the cleanup task calls it (each call its own transaction) until it returns fewer than batch_size.';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
