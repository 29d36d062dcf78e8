--! Previous: sha1:4d6940701b76d068ffc7431b7a852d9e8df52b61
--! Hash: sha1:a14addb81d89185febcea4d4e614f9c96e80922e
--! Message: recalculation

-- Recalculation: recompute derived data (scores, caches, aggregates) for every key, or for some,
-- in batches run as separate jobs, idempotently and visibly.
--
-- How the guarantees are kept:
-- * A run materializes its keys into steward.recalc_batches when it starts (one transaction), so
--   the set of keys is fixed and every key is in exactly one batch.
-- * One job per batch, job key steward:recalc:<run>:<batch>. A batch job calls compute(keys)
--   and marks its batch done in the same transaction, under a lock on the batch row: a batch is
--   computed (committed) at most once, and a job that finds its batch done does nothing. A
--   worker killed mid-batch leaves the batch pending, and the retried job computes it.
-- * At most one unfinished run per name (a unique index); a second request for the same keys
--   joins it, a request for other keys is refused until it ends.
-- * The run's counters are updated by each batch's transaction under the run's row lock, so the
--   batch that makes every batch terminal is the one that ends the run, exactly once.

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('recalculation.max_attempts', '5', 'integer', '1', '1000',
   'Attempts of one batch job before the batch counts as failed (its job then goes to the dead letters).'),
  ('recalculation.batch_timeout', '10 minutes', 'interval', '1 millisecond', '7 days',
   'statement_timeout of one batch (the call of compute); a batch over it fails that attempt.'),
  ('recalculation.retention', '30 days', 'interval', '1 hour', '3650 days',
   'Finished runs (and their batches) older than this are removed by cleanup.')
on conflict (name) do nothing;

create table steward.recalculations (
  name          text primary key check (name ~ '^[a-z][a-z0-9_.-]{0,99}$'),
  keys_sql      text not null,
  compute       regprocedure not null,
  batch_size    integer not null check (batch_size between 1 and 10000),
  registered_at timestamptz not null default pg_catalog.now()
);
comment on table steward.recalculations is
  'Registered recalculations (register_recalculation): the query yielding the keys, the function recomputing a batch of them, and the batch size.';
comment on column steward.recalculations.keys_sql is
  'A query yielding one jsonb column named key; run with search_path = pg_catalog, pg_temp, so its names are schema-qualified.';
comment on column steward.recalculations.compute is
  'compute(keys jsonb): recomputes the keys of one batch (a JSON array of keys).';

create table steward.recalc_runs (
  id              bigint generated always as identity primary key,
  name            text not null,
  status          text not null default 'running'
                  check (status in ('running', 'completed', 'failed', 'cancelled')),
  scope           text not null check (scope in ('all', 'keys')),
  keys_digest     text,
  compute         regprocedure not null,
  batch_size      integer not null,
  keys_total      integer not null default 0,
  keys_done       integer not null default 0,
  keys_failed     integer not null default 0,
  batches_total   integer not null default 0,
  batches_done    integer not null default 0,
  batches_failed  integer not null default 0,
  started_at      timestamptz not null default pg_catalog.now(),
  finished_at     timestamptz,
  started_by      text not null,
  error           text,
  check ((status = 'running') = (finished_at is null))
);
comment on table steward.recalc_runs is
  'One row per recalculation run: its progress (keys and batches done and failed) and outcome. A run ends completed or failed when every batch is done or failed, or cancelled.';
comment on column steward.recalc_runs.scope is 'all: every key keys_sql yielded at the start; keys: the keys the request named.';
comment on column steward.recalc_runs.keys_digest is 'For scope keys: md5 of the sorted distinct keys, to tell a repeated request (joined) from another (refused).';
comment on column steward.recalc_runs.compute is 'The compute function when the run started (a later re-registration does not change a run).';
comment on column steward.recalc_runs.error is 'For a failed run: how many batches failed and the first error; each batch''s error is in recalc_batches.last_error.';
comment on column steward.recalc_runs.started_by is 'The steward.actor setting of the session that started the run, else the session user.';

-- At most one unfinished run per name: the rule that makes a second request join or be refused.
create unique index recalc_runs_running_idx on steward.recalc_runs (name) where finished_at is null;
create index recalc_runs_name_idx on steward.recalc_runs (name, id);
create index recalc_runs_finished_idx on steward.recalc_runs (finished_at) where finished_at is not null;

create table steward.recalc_batches (
  run_id      bigint not null references steward.recalc_runs (id) on delete cascade,
  batch       integer not null,
  status      text not null default 'pending' check (status in ('pending', 'done', 'failed', 'cancelled')),
  key_count   integer not null,
  keys        jsonb,
  attempts    integer not null default 0,
  last_error  text,
  finished_at timestamptz,
  primary key (run_id, batch)
);
comment on table steward.recalc_batches is
  'The keys of a run, materialized at its start in batches of batch_size; one job per batch. The keys of a done batch are dropped (key_count stays); a failed batch keeps them for a replay.';
comment on column steward.recalc_batches.attempts is 'Failed attempts so far (a successful attempt does not count).';

-- Registering ----------------------------------------------------------------------------------

create function steward.register_recalculation(name text, keys_sql text, compute regprocedure, batch_size integer default 500)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  fn record;
  key_type text;
  replaced boolean;
  trimmed text := pg_catalog.rtrim(pg_catalog.btrim(register_recalculation.keys_sql), '; ' || chr(10) || chr(9));
begin
  if register_recalculation.name is null or keys_sql is null or compute is null or batch_size is null then
    raise exception 'name, keys_sql, compute and batch_size must not be null' using errcode = '22004';
  end if;
  if register_recalculation.name !~ '^[a-z][a-z0-9_.-]{0,99}$' then
    raise exception 'recalculation name "%" is not allowed', register_recalculation.name using errcode = '22023',
      hint = 'Use lower-case letters, digits, _ . and -, starting with a letter, at most 100 characters (e.g. metric_confidence).';
  end if;
  if batch_size < 1 or batch_size > 10000 then
    raise exception 'batch_size must be from 1 to 10000, got %', batch_size using errcode = '22023',
      hint = 'A batch is one job and one transaction: a few hundred keys is usual.';
  end if;

  select p.prokind, p.pronargs, p.proretset, p.proargtypes[0] as first_type into fn
    from pg_catalog.pg_proc p where p.oid = compute;
  if fn.prokind <> 'f' or fn.pronargs <> 1 or fn.first_type <> 'jsonb'::regtype or fn.proretset then
    raise exception 'compute % must be a function taking exactly one jsonb argument and returning one value', compute
      using errcode = '22023',
            hint = 'Declare it as: create function my_schema.my_compute(keys jsonb) returns void (or integer) ...; keys is a JSON array of keys.';
  end if;

  if trimmed = '' then
    raise exception 'keys_sql must be a query' using errcode = '22023',
      hint = 'For example: select jsonb_build_object(''user_id'', id) as key from public.users';
  end if;
  -- Planned (not run) under the same search_path as runs use. USING makes it one prepared
  -- statement, so a second statement hidden in keys_sql is refused here too.
  begin
    execute pg_catalog.format(
      'select pg_catalog.format_type(pg_catalog.pg_typeof(k.key), null) from (select $1) as one '
      'left join (select s.key from (%s) as s limit 0) as k on true', trimmed)
      into key_type using true;
  exception when others then
    raise exception 'keys_sql is not a query yielding a jsonb column named key: %', sqlerrm using errcode = '22023',
      hint = 'keys_sql runs with search_path = pg_catalog, pg_temp: qualify table names (public.users), and name the column key: select jsonb_build_object(''id'', id) as key from public.users';
  end;
  if key_type <> 'jsonb' then
    raise exception 'keys_sql yields key of type %, not jsonb', key_type using errcode = '22023',
      hint = 'Build the key as jsonb: to_jsonb(id) as key, or jsonb_build_object(''user_id'', user_id, ''metric'', metric) as key.';
  end if;

  insert into steward.recalculations as r (name, keys_sql, compute, batch_size)
  values (register_recalculation.name, trimmed, compute, batch_size)
  on conflict on constraint recalculations_pkey do update
    set keys_sql = excluded.keys_sql, compute = excluded.compute, batch_size = excluded.batch_size,
        registered_at = pg_catalog.now()
  returning (xmax::text <> '0') into replaced;
  perform steward.audit('register_recalculation', register_recalculation.name, pg_catalog.jsonb_build_object(
    'keys_sql', trimmed, 'compute', compute::text, 'batch_size', batch_size, 'replaced', replaced));
end
$$;
comment on function steward.register_recalculation(text, text, regprocedure, integer) is
  'Registers (or replaces) a recalculation: keys_sql yields one jsonb column key; compute(keys jsonb) recomputes one batch of keys (a JSON array); batch_size keys per batch job (1 to 10000). keys_sql is checked by planning it with search_path = pg_catalog, pg_temp. Audited.';

create function steward.unregister_recalculation(name text)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  running bigint;
begin
  select r.id into running from steward.recalc_runs r
   where r.name = unregister_recalculation.name and r.finished_at is null;
  if running is not null then
    raise exception 'recalculation "%" has run % in progress', unregister_recalculation.name, running
      using errcode = 'P0001', hint = pg_catalog.format('Wait for it to end, or stop it: select steward.cancel_recalculation(%s);', running);
  end if;
  delete from steward.recalculations r where r.name = unregister_recalculation.name;
  if not found then
    return false;
  end if;
  perform steward.audit('unregister_recalculation', unregister_recalculation.name);
  return true;
end
$$;
comment on function steward.unregister_recalculation(text) is
  'Removes a registered recalculation; its past runs stay in recalc_runs until cleanup. Refused while a run is in progress. Returns whether it was registered. Audited.';

-- Running ----------------------------------------------------------------------------------------

create function steward.resume_recalculation(run_id bigint)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  max_attempts integer := steward.setting_integer('recalculation.max_attempts');
  specs graphile_worker.job_spec[];
begin
  -- A job is live while it is running or has attempts left. A pending batch without a live job
  -- lost it (deleted, dead-lettered after a crash in its last attempt): it gets a new one. Live
  -- jobs are left alone: add_jobs would reset a queued job's attempts and, worse, supersede a
  -- running one.
  select pg_catalog.array_agg(pg_catalog.jsonb_populate_record(null::graphile_worker.job_spec,
           pg_catalog.jsonb_build_object(
             'identifier', 'recalculate_batch',
             'payload', pg_catalog.jsonb_build_object('run', b.run_id, 'batch', b.batch),
             'max_attempts', max_attempts,
             'job_key', pg_catalog.format('steward:recalc:%s:%s', b.run_id, b.batch),
             -- Behind other work: a big fan-out must not hold up refreshes, drains and cron jobs.
             'priority', 10)) order by b.batch)
    into specs
    from steward.recalc_batches b
   where b.run_id = resume_recalculation.run_id and b.status = 'pending'
     and not exists (
       select from graphile_worker.jobs j
        where j.key = pg_catalog.format('steward:recalc:%s:%s', b.run_id, b.batch)
          and (j.locked_at is not null or j.attempts < j.max_attempts));
  if specs is null then
    return 0;
  end if;
  perform graphile_worker.add_jobs(specs);
  return pg_catalog.cardinality(specs);
end
$$;
comment on function steward.resume_recalculation(bigint) is
  'Gives every pending batch of the run that has no live job (running, or with attempts left) a new job; returns how many. Called when a run is joined, so re-running an unfinished run repairs it without duplicating work.';

create function steward.start_recalculation(name text, keys jsonb default null)
returns table (run_id bigint, joined boolean, keys_total integer, batches_total integer, status text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  registration steward.recalculations;
  running steward.recalc_runs;
  digest text;
  new_run steward.recalc_runs;
  materialize text;
begin
  if start_recalculation.name is null then
    raise exception 'name must not be null' using errcode = '22004';
  end if;
  if start_recalculation.keys is not null and pg_catalog.jsonb_typeof(start_recalculation.keys) <> 'array' then
    raise exception 'keys must be a JSON array of keys (or null for every key), got %', pg_catalog.jsonb_typeof(start_recalculation.keys)
      using errcode = '22023', hint = 'For example: ''[{"user_id": 1, "metric": "steps"}]''::jsonb';
  end if;
  if start_recalculation.keys is not null and start_recalculation.keys @> '[null]' then
    raise exception 'keys must not contain null' using errcode = '22023';
  end if;
  -- The registration's row lock serializes the starts of one name: a concurrent request waits,
  -- then finds this run and joins it.
  select * into registration from steward.recalculations r where r.name = start_recalculation.name for update;
  if not found then
    raise exception 'unknown recalculation "%"', start_recalculation.name using errcode = 'P0002',
      hint = 'select name from steward.recalculations lists them; steward.register_recalculation adds one.';
  end if;
  if not exists (select from pg_catalog.pg_proc p where p.oid = registration.compute) then
    raise exception 'the compute function of recalculation "%" no longer exists', start_recalculation.name
      using errcode = 'P0002', hint = 'Create it again, or register the recalculation again with another function.';
  end if;
  if start_recalculation.keys is not null then
    select pg_catalog.md5(coalesce(pg_catalog.string_agg(k::text, ',' order by k), ''))
      into digest from (select distinct k from pg_catalog.jsonb_array_elements(start_recalculation.keys) as e(k)) as d;
  end if;

  select * into running from steward.recalc_runs r
   where r.name = start_recalculation.name and r.finished_at is null;
  if found then
    if running.scope = (case when digest is null then 'all' else 'keys' end)
       and running.keys_digest is not distinct from digest then
      perform steward.resume_recalculation(running.id);
      return query select running.id, true, running.keys_total, running.batches_total, running.status;
      return;
    end if;
    raise exception 'recalculation "%" has run % in progress over other keys', start_recalculation.name, running.id
      using errcode = 'P0001',
            hint = pg_catalog.format('Ask again when it has ended (steward recalc %s follows it), or stop it: select steward.cancel_recalculation(%s);',
                                     start_recalculation.name, running.id);
  end if;

  insert into steward.recalc_runs (name, scope, keys_digest, compute, batch_size, started_by)
  values (start_recalculation.name, case when digest is null then 'all' else 'keys' end, digest,
          registration.compute, registration.batch_size,
          coalesce(nullif(pg_catalog.current_setting('steward.actor', true), ''), session_user::text))
  returning * into new_run;

  -- Distinct keys, in a fixed order, numbered into batches of batch_size.
  materialize :=
    'insert into steward.recalc_batches (run_id, batch, key_count, keys) '
    'select $1, (n - 1) / $2, pg_catalog.count(*), pg_catalog.jsonb_agg(key order by n) '
    '  from (select d.key, pg_catalog.row_number() over (order by d.key) as n '
    '          from (select distinct s.key from (%s) as s where s.key is not null) as d) as numbered '
    ' group by (n - 1) / $2';
  if digest is null then
    execute pg_catalog.format(materialize, registration.keys_sql) using new_run.id, registration.batch_size;
  else
    execute pg_catalog.format(materialize, 'select e.k as key from pg_catalog.jsonb_array_elements($3) as e(k)')
      using new_run.id, registration.batch_size, start_recalculation.keys;
  end if;

  update steward.recalc_runs r
     set keys_total = t.keys, batches_total = t.batches,
         -- Nothing to do: the run is over as soon as it starts.
         status = case when t.batches = 0 then 'completed' else r.status end,
         finished_at = case when t.batches = 0 then pg_catalog.now() end
    from (select coalesce(pg_catalog.sum(b.key_count), 0)::integer as keys, pg_catalog.count(*)::integer as batches
            from steward.recalc_batches b where b.run_id = new_run.id) as t
   where r.id = new_run.id
  returning * into new_run;
  perform steward.resume_recalculation(new_run.id);
  perform steward.audit('start_recalculation', start_recalculation.name, pg_catalog.jsonb_build_object(
    'run', new_run.id, 'scope', new_run.scope, 'keys', new_run.keys_total, 'batches', new_run.batches_total));
  return query select new_run.id, false, new_run.keys_total, new_run.batches_total, new_run.status;
end
$$;
comment on function steward.start_recalculation(text, jsonb) is
  'Starts a run of a registered recalculation over every key (keys null) or the given JSON array of keys: materializes the distinct keys into batches and enqueues one recalculate_batch job per batch. While a run of the name is unfinished, a request for the same keys joins it (joined = true, and pending batches that lost their job get one again); a request for other keys is refused (P0001). Unknown name: P0002. Starting a run is audited.';

create function steward.finish_recalc_batch(run_id bigint, batch integer, succeeded boolean, error text default null)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  b steward.recalc_batches;
  healed integer;
  run steward.recalc_runs;
begin
  select * into b from steward.recalc_batches x
   where x.run_id = finish_recalc_batch.run_id and x.batch = finish_recalc_batch.batch for update;
  if not found or b.status in ('done', 'cancelled') then
    return null;
  end if;
  if b.status = 'failed' and not succeeded then
    -- A replayed batch failing again: it stays failed, with the new error.
    update steward.recalc_batches x set attempts = x.attempts + 1, last_error = error
     where x.run_id = finish_recalc_batch.run_id and x.batch = finish_recalc_batch.batch;
    return null;
  end if;
  -- A failed batch that succeeds later (its dead letter replayed) moves from failed to done.
  healed := case when b.status = 'failed' then 1 else 0 end;
  update steward.recalc_batches x
     set status = case when succeeded then 'done' else 'failed' end,
         keys = case when succeeded then null else x.keys end,
         last_error = case when succeeded then x.last_error else error end,
         attempts = x.attempts + case when succeeded then 0 else 1 end,
         finished_at = pg_catalog.now()
   where x.run_id = finish_recalc_batch.run_id and x.batch = finish_recalc_batch.batch;

  update steward.recalc_runs r
     set batches_done = r.batches_done + case when succeeded then 1 else 0 end,
         keys_done = r.keys_done + case when succeeded then b.key_count else 0 end,
         batches_failed = r.batches_failed + case when succeeded then -healed else 1 end,
         keys_failed = r.keys_failed + case when succeeded then -healed * b.key_count else b.key_count end
   where r.id = finish_recalc_batch.run_id
  returning * into run;
  -- The batch that makes every batch terminal ends the run (the row lock makes that one batch).
  if run.status in ('running', 'failed') and run.batches_done + run.batches_failed = run.batches_total then
    update steward.recalc_runs r
       set status = case when r.batches_failed > 0 then 'failed' else 'completed' end,
           finished_at = case when r.status = 'running' or r.batches_failed = 0 then pg_catalog.now() else r.finished_at end,
           error = case when r.batches_failed = 0 then null else (
             select pg_catalog.format('%s of %s batches failed; batch %s: %s', r.batches_failed, r.batches_total, f.batch, f.last_error)
               from steward.recalc_batches f where f.run_id = r.id and f.status = 'failed' order by f.batch limit 1) end
     where r.id = finish_recalc_batch.run_id
    returning * into run;
    return run.status;
  end if;
  return null;
end
$$;
comment on function steward.finish_recalc_batch(bigint, integer, boolean, text) is
  'Records a batch as done or failed for good, updates its run''s counters and ends the run when every batch is terminal. Returns the run''s new status when this batch ended it (or healed it), else null. Internal to compute_recalc_batch and fail_recalc_batch.';

create function steward.fail_recalc_batch(run_id bigint, batch integer, error text, final_attempt boolean)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if final_attempt then
    return steward.finish_recalc_batch(run_id, batch, false, error);
  end if;
  update steward.recalc_batches x
     set attempts = x.attempts + 1, last_error = error
   where x.run_id = fail_recalc_batch.run_id and x.batch = fail_recalc_batch.batch and x.status in ('pending', 'failed');
  return null;
end
$$;
comment on function steward.fail_recalc_batch(bigint, integer, text, boolean) is
  'Records a failed attempt of a batch: its error, and when it was the job''s last attempt the batch fails for good (see finish_recalc_batch). Returns the run''s new status if the run ended.';

create function steward.compute_recalc_batch(run_id bigint, batch integer, final_attempt boolean default true)
returns table (outcome text, keys integer, run_status text, error text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  run steward.recalc_runs;
  b steward.recalc_batches;
  fn record;
  message text;
begin
  select * into run from steward.recalc_runs r where r.id = compute_recalc_batch.run_id;
  if not found then
    raise exception 'recalculation run % does not exist', compute_recalc_batch.run_id using errcode = 'P0002',
      hint = 'Finished runs are removed after recalculation.retention.';
  end if;
  -- The row lock makes a second job for the same batch wait, then find it done.
  select * into b from steward.recalc_batches x
   where x.run_id = compute_recalc_batch.run_id and x.batch = compute_recalc_batch.batch for update;
  if not found then
    raise exception 'run % has no batch %', compute_recalc_batch.run_id, compute_recalc_batch.batch using errcode = 'P0002';
  end if;
  if b.status in ('done', 'cancelled') then
    return query select 'skipped', b.key_count, null::text, null::text;
    return;
  end if;

  select n.nspname, p.proname into fn
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
   where p.oid = run.compute;
  begin
    if not found then
      raise exception 'the compute function of run % no longer exists', run.id using errcode = 'P0002';
    end if;
    execute pg_catalog.format('select %I.%I($1)', fn.nspname, fn.proname) using b.keys;
  exception when others then
    -- compute's work is rolled back to here; the error is recorded in this same transaction.
    message := sqlerrm;
    return query select case when final_attempt then 'failed' else 'retry' end, b.key_count,
                        steward.fail_recalc_batch(run.id, b.batch, message, final_attempt), message;
    return;
  end;
  return query select 'done', b.key_count, steward.finish_recalc_batch(run.id, b.batch, true), null::text;
end
$$;
comment on function steward.compute_recalc_batch(bigint, integer, boolean) is
  'Runs one batch: calls compute(keys) and marks the batch done in the same transaction (outcome done), or does nothing if it is already done or cancelled (skipped). If compute raises, its work is undone and the error recorded: outcome retry, or failed when final_attempt. run_status is the run''s new status when this batch ended it. Called by the recalculate_batch task.';

create function steward.cancel_recalculation(run_id bigint)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  cancelled integer;
  run steward.recalc_runs;
begin
  select * into run from steward.recalc_runs r where r.id = cancel_recalculation.run_id;
  if not found then
    raise exception 'recalculation run % does not exist', cancel_recalculation.run_id using errcode = 'P0002';
  end if;
  if run.finished_at is not null then
    raise exception 'run % has already ended (%)', run.id, run.status using errcode = 'P0001';
  end if;
  -- Batches before the run (the order batch jobs lock them in), so the two never deadlock.
  update steward.recalc_batches b set status = 'cancelled', finished_at = pg_catalog.now()
   where b.run_id = run.id and b.status = 'pending';
  get diagnostics cancelled = row_count;
  update steward.recalc_runs r set status = 'cancelled', finished_at = pg_catalog.now(),
         error = pg_catalog.format('cancelled with %s of %s batches pending', cancelled, r.batches_total)
   where r.id = run.id and r.finished_at is null;
  perform steward.audit('cancel_recalculation', run.name, pg_catalog.jsonb_build_object('run', run.id, 'batches_cancelled', cancelled));
  return cancelled;
end
$$;
comment on function steward.cancel_recalculation(bigint) is
  'Stops an unfinished run: its pending batches are cancelled (their jobs, when they run, do nothing) and the run ends cancelled. A batch being computed finishes. Returns how many batches it cancelled. Audited.';

-- Progress: what `steward recalc`, the batch task and /metrics read ---------------------------

create view steward.recalc_run_progress as
select r.id, r.name, r.status, r.scope, r.keys_total, r.keys_done, r.keys_failed, r.batches_total,
       r.batches_done, r.batches_failed, r.started_at, r.finished_at, r.started_by, r.error,
       extract(epoch from coalesce(r.finished_at, pg_catalog.now()) - r.started_at)::float8 as elapsed_seconds
  from steward.recalc_runs r;
comment on view steward.recalc_run_progress is
  'Every recalculation run with its progress, and its elapsed seconds: to its end, or to now while it runs (the server''s clock).';

create view steward.recalculation_status as
select c.name, c.batch_size, c.compute, c.registered_at, current_run.id as current_run_id,
       current_run.status as current_run_status
  from steward.recalculations c
  left join lateral (
    select r.id, r.status from steward.recalc_runs r
     where r.name = c.name
     order by r.finished_at is null desc, r.id desc
     limit 1
  ) as current_run on true;
comment on view steward.recalculation_status is
  'Every registered recalculation and its current run: the unfinished one, else the latest (null when it never ran).';

create function steward.recalc_failed_batches(run_id bigint, max integer default 5)
returns table (batch integer, key_count integer, attempts integer, last_error text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select b.batch, b.key_count, b.attempts, b.last_error
    from steward.recalc_batches b
   where b.run_id = recalc_failed_batches.run_id and b.status = 'failed'
   order by b.batch
   limit greatest(recalc_failed_batches.max, 0)
$$;
comment on function steward.recalc_failed_batches(bigint, integer) is
  'The first max failed batches of a run (by number): their size, attempts and last error.';

create function steward.recalc_run_is_busy(run_id bigint)
returns boolean
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select exists (
    select from steward.job_states() j
     where j.task_identifier = 'recalculate_batch' and j.state = 'running'
       and j.key like 'steward:recalc:' || recalc_run_is_busy.run_id || ':%')
$$;
comment on function steward.recalc_run_is_busy(bigint) is
  'Whether a worker is computing a batch of the run right now (a running recalculate_batch job of it).';

create function steward.recalculation_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'steward_recalc_keys', 'gauge',
         'Keys of recalculation runs in progress, by recalculation and state (done, failed, pending).',
         pg_catalog.jsonb_build_object('name', r.name, 'state', k.state), k.keys::float8
    from steward.recalc_run_progress r
   cross join lateral (values ('done', r.keys_done), ('failed', r.keys_failed),
                              ('pending', r.keys_total - r.keys_done - r.keys_failed)) as k(state, keys)
   where r.status = 'running'
  union all
  select 'steward_recalc_last_run_seconds', 'gauge',
         'Duration of the last finished run of each recalculation, labelled by its status (completed, failed, cancelled).',
         pg_catalog.jsonb_build_object('name', c.name, 'status', last_run.status), last_run.elapsed_seconds
    from steward.recalculations c
   cross join lateral (
         select r.status, r.elapsed_seconds
           from steward.recalc_run_progress r
          where r.name = c.name and r.finished_at is not null
          order by r.id desc limit 1) as last_run
$$;
comment on function steward.recalculation_metrics() is
  'Metric source of recalculations: steward_recalc_keys{name,state} of runs in progress, steward_recalc_last_run_seconds{name,status} of the last finished run of each.';

insert into steward.metric_sources (name, function, description) values
  ('recalculation', 'steward.recalculation_metrics()', 'keys of runs in progress, duration of the last finished run')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Cleanup ---------------------------------------------------------------------------------------

insert into steward.cleanup_steps (name, target, time_column, retention_setting, description)
values ('recalc_runs', 'steward.recalc_runs', 'finished_at', 'recalculation.retention',
        'finished recalculation runs past recalculation.retention')
on conflict (name) do update set function = excluded.function, target = excluded.target,
  time_column = excluded.time_column, retention_setting = excluded.retention_setting,
  description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
