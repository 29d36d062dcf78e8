--! Previous: sha1:124c042cceb5e683d6c57136fcecc4eb658d9bf0
--! Hash: sha1:23ae0451b6df53b6c4115c8e76c54513a3541b0e
--! Message: circuits

-- Circuit breakers shared by every process. Their configuration lives in a logged table; their
-- states in an UNLOGGED table: a crash of the server closes every circuit.
--
-- Every client function locks the rows it decides on, reads the clock after it holds the
-- locks, and so is exact under any number of concurrent callers. In REPEATABLE READ or
-- SERIALIZABLE a concurrent change to the same row makes the call fail with a serialization
-- error (SQLSTATE 40001) instead of deciding on a stale snapshot.

create table steward.circuits (
  name              text primary key check (name <> '' and pg_catalog.length(name) <= 200),
  failure_threshold integer not null check (failure_threshold > 0),
  cooldown          interval not null check (cooldown > interval '0'),
  half_open_probes  integer not null check (half_open_probes > 0),
  updated_at        timestamptz not null default pg_catalog.now()
);
comment on table steward.circuits is
  'Configured circuit breakers (steward.circuit_configure). A circuit not listed here behaves as failure_threshold 5, cooldown 60 seconds, half_open_probes 1.';

create unlogged table steward.circuit_states (
  name                 text primary key,
  state                text not null check (state in ('closed', 'open')),
  consecutive_failures integer not null default 0,
  opened_at            timestamptz,
  probes               timestamptz[] not null default '{}',
  changed_at           timestamptz not null,
  last_error           text,
  last_failure_at      timestamptz
);
comment on table steward.circuit_states is
  'State of circuits that have failed at least once. An open circuit is half-open once its cooldown has passed since opened_at; probes holds when each admitted half-open probe stops counting (its admission plus the cooldown), so a probe whose caller died frees its slot. Unlogged: a crash closes every circuit.';

create function steward.circuit_effective_state(stored text, opened_at timestamptz, cooldown interval, moment timestamptz)
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case
           when stored is null or stored = 'closed' then 'closed'
           when moment >= opened_at + cooldown then 'half_open'
           else 'open'
         end
$$;
comment on function steward.circuit_effective_state(text, timestamptz, interval, timestamptz) is
  'The state a circuit is in at the given moment: a stored open state whose cooldown has passed is half_open.';

create function steward.circuit_configure(
  name text,
  failure_threshold integer default 5,
  cooldown interval default '60 seconds',
  half_open_probes integer default 1
)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  previous steward.circuits;
begin
  if circuit_configure.name is null or circuit_configure.failure_threshold is null
     or circuit_configure.cooldown is null or circuit_configure.half_open_probes is null then
    raise exception 'circuit_configure needs a name, failure_threshold, cooldown and half_open_probes' using errcode = '22004';
  end if;
  if circuit_configure.name = '' or pg_catalog.length(circuit_configure.name) > 200 then
    raise exception 'circuit name must have 1 to 200 characters' using errcode = '22023';
  end if;
  if circuit_configure.failure_threshold <= 0 then
    raise exception 'failure_threshold must be positive, got %', circuit_configure.failure_threshold using errcode = '22023';
  end if;
  if circuit_configure.cooldown <= interval '0' then
    raise exception 'cooldown must be a positive interval, got %', circuit_configure.cooldown using errcode = '22023';
  end if;
  if circuit_configure.half_open_probes <= 0 then
    raise exception 'half_open_probes must be positive, got %', circuit_configure.half_open_probes using errcode = '22023';
  end if;
  select * into previous from steward.circuits c where c.name = circuit_configure.name for update;
  insert into steward.circuits as c (name, failure_threshold, cooldown, half_open_probes)
  values (circuit_configure.name, circuit_configure.failure_threshold, circuit_configure.cooldown,
          circuit_configure.half_open_probes)
      on conflict on constraint circuits_pkey do update
     set failure_threshold = excluded.failure_threshold, cooldown = excluded.cooldown,
         half_open_probes = excluded.half_open_probes, updated_at = pg_catalog.now();
  perform steward.audit('circuit_configure', circuit_configure.name,
    pg_catalog.jsonb_build_object(
      'failure_threshold', circuit_configure.failure_threshold, 'cooldown', circuit_configure.cooldown::text,
      'half_open_probes', circuit_configure.half_open_probes,
      'previous', case when previous.name is null then null
                       else pg_catalog.jsonb_build_object('failure_threshold', previous.failure_threshold,
                              'cooldown', previous.cooldown::text, 'half_open_probes', previous.half_open_probes) end));
end
$$;
comment on function steward.circuit_configure(text, integer, interval, integer) is
  'Creates or changes a circuit breaker: failure_threshold consecutive failures open it; after cooldown it is half-open and admits at most half_open_probes calls at once across all processes. Takes effect at once, also for a circuit already open. Audited.';

create function steward.circuit_allow(name text)
returns boolean
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  circuit steward.circuit_states;
  cooldown interval;
  probe_limit integer;
  moment timestamptz;
  live timestamptz[];
begin
  if circuit_allow.name is null or circuit_allow.name = '' then
    raise exception 'circuit name must not be empty' using errcode = '22023';
  end if;
  -- The common case, a closed circuit, is one read and no write.
  select * into circuit from steward.circuit_states s where s.name = circuit_allow.name;
  if not found or circuit.state = 'closed' then
    return true;
  end if;
  select coalesce(c.cooldown, interval '60 seconds'), coalesce(c.half_open_probes, 1)
    into cooldown, probe_limit
    from (select) dummy left join steward.circuits c on c.name = circuit_allow.name;
  if pg_catalog.clock_timestamp() < circuit.opened_at + cooldown then
    return false;
  end if;

  -- Half-open: claim a probe slot under the row lock, so the limit holds across processes.
  select * into circuit from steward.circuit_states s where s.name = circuit_allow.name for update;
  moment := pg_catalog.clock_timestamp();
  case steward.circuit_effective_state(circuit.state, circuit.opened_at, cooldown, moment)
    when 'closed' then return true;
    when 'open' then return false;
    else null;
  end case;
  live := array(select p from unnest(circuit.probes) p where p > moment);
  if pg_catalog.cardinality(live) >= probe_limit then
    return false;
  end if;
  update steward.circuit_states s set probes = live || (moment + cooldown) where s.name = circuit_allow.name;
  return true;
end
$$;
comment on function steward.circuit_allow(text) is
  'Whether a call through the circuit may go ahead: closed allows; open refuses until the cooldown has passed; half-open allows at most half_open_probes calls at once across all processes (a probe that never reports frees its slot after the cooldown). An unknown name is a closed circuit.';

create function steward.circuit_record(name text, success boolean, error text default null)
returns text
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  circuit steward.circuit_states;
  threshold integer;
  cooldown interval;
  moment timestamptz;
  effective text;
begin
  if circuit_record.name is null or circuit_record.name = '' then
    raise exception 'circuit name must not be empty' using errcode = '22023';
  end if;
  if pg_catalog.length(circuit_record.name) > 200 then
    raise exception 'circuit name must have at most 200 characters' using errcode = '22023';
  end if;
  if circuit_record.success is null then
    raise exception 'success must be true or false' using errcode = '22004';
  end if;
  select * into circuit from steward.circuit_states s where s.name = circuit_record.name;
  -- A success on a healthy circuit changes nothing: no write on the common path.
  if circuit_record.success and (not found or (circuit.state = 'closed' and circuit.consecutive_failures = 0)) then
    return 'closed';
  end if;

  select coalesce(c.failure_threshold, 5), coalesce(c.cooldown, interval '60 seconds')
    into threshold, cooldown
    from (select) dummy left join steward.circuits c on c.name = circuit_record.name;
  insert into steward.circuit_states (name, state, changed_at)
  values (circuit_record.name, 'closed', pg_catalog.clock_timestamp())
      on conflict on constraint circuit_states_pkey do nothing;
  select * into circuit from steward.circuit_states s where s.name = circuit_record.name for update;
  moment := pg_catalog.clock_timestamp();
  effective := steward.circuit_effective_state(circuit.state, circuit.opened_at, cooldown, moment);

  if circuit_record.success then
    if effective = 'open' then
      -- A late success of a call admitted before the circuit opened: the cooldown stands.
      return 'open';
    end if;
    update steward.circuit_states s
       set state = 'closed', consecutive_failures = 0, probes = '{}',
           changed_at = case when effective = 'closed' then s.changed_at else moment end
     where s.name = circuit_record.name;
    return 'closed';
  end if;

  if effective = 'open' then
    -- Late failures neither extend nor shorten the cooldown.
    update steward.circuit_states s
       set last_error = left(circuit_record.error, 2000), last_failure_at = moment
     where s.name = circuit_record.name;
    return 'open';
  end if;
  if effective = 'half_open' or circuit.consecutive_failures + 1 >= threshold then
    update steward.circuit_states s
       set state = 'open', opened_at = moment, probes = '{}', changed_at = moment,
           consecutive_failures = s.consecutive_failures + 1,
           last_error = left(circuit_record.error, 2000), last_failure_at = moment
     where s.name = circuit_record.name;
    return 'open';
  end if;
  update steward.circuit_states s
     set consecutive_failures = s.consecutive_failures + 1,
         last_error = left(circuit_record.error, 2000), last_failure_at = moment
   where s.name = circuit_record.name;
  return 'closed';
end
$$;
comment on function steward.circuit_record(text, boolean, text) is
  'Reports the outcome of a call through the circuit and returns its new state (closed, open, half_open): failure_threshold consecutive failures open it; in half-open a success closes it and a failure opens it again; outcomes reported while open change nothing (they belong to calls admitted before it opened).';

create function steward.circuit_state(name text)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select steward.circuit_effective_state(s.state, s.opened_at, coalesce(c.cooldown, interval '60 seconds'),
                                         pg_catalog.clock_timestamp())
    from (select) dummy
    left join steward.circuit_states s on s.name = circuit_state.name
    left join steward.circuits c on c.name = circuit_state.name
$$;
comment on function steward.circuit_state(text) is
  'The state of a circuit now: closed, open or half_open. An unknown name is closed. For operators (not granted to steward_client).';

create view steward.circuit_status as
select coalesce(c.name, s.name) as name,
       steward.circuit_effective_state(s.state, s.opened_at, coalesce(c.cooldown, interval '60 seconds'),
                                       pg_catalog.clock_timestamp()) as state,
       coalesce(s.consecutive_failures, 0) as consecutive_failures,
       coalesce(c.failure_threshold, 5) as failure_threshold,
       coalesce(c.cooldown, interval '60 seconds') as cooldown,
       coalesce(c.half_open_probes, 1) as half_open_probes,
       (select count(*)::integer from unnest(s.probes) p where p > pg_catalog.clock_timestamp()) as probes_in_flight,
       s.opened_at,
       s.changed_at,
       s.last_error,
       s.last_failure_at,
       c.name is not null as is_configured
  from steward.circuits c
  full join steward.circuit_states s on s.name = c.name;
comment on view steward.circuit_status is
  'Every configured or once-failed circuit with its state now, failure count, probes in flight and last error.';

create function steward.circuit_reset(name text)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  previous text;
begin
  select steward.circuit_state(circuit_reset.name) into previous;
  delete from steward.circuit_states s where s.name = circuit_reset.name;
  perform steward.audit('circuit_reset', circuit_reset.name, pg_catalog.jsonb_build_object('previous_state', previous));
  return previous;
end
$$;
comment on function steward.circuit_reset(text) is
  'Closes a circuit by hand and forgets its failures; returns the state it was in. Audited.';

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('circuits.state_retention', '7 days', 'interval', '0 seconds', '3650 days',
   'How long cleanup keeps the state of a closed circuit with no failures (its last error) after its last change.')
on conflict (name) do nothing;

create function steward.cleanup_circuits(batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  removed bigint;
begin
  if batch_size is null or batch_size <= 0 then
    raise exception 'batch_size must be a positive integer, got %', coalesce(batch_size::text, 'null') using errcode = '22023';
  end if;
  with doomed as (
    select s.name from steward.circuit_states s
     where s.state = 'closed' and s.consecutive_failures = 0
       and s.changed_at < pg_catalog.now() - steward.setting_interval('circuits.state_retention')
       and coalesce(s.last_failure_at, '-infinity') < pg_catalog.now() - steward.setting_interval('circuits.state_retention')
     limit batch_size
       for update skip locked
  )
  delete from steward.circuit_states s using doomed d where s.name = d.name;
  get diagnostics removed = row_count;
  return removed;
end
$$;
comment on function steward.cleanup_circuits(integer) is
  'Deletes at most batch_size states of healthy circuits (closed, no failures) unchanged for circuits.state_retention; such a circuit behaves the same without its row. Returns how many went.';

insert into steward.cleanup_steps (name, function, description) values
  ('circuits', 'steward.cleanup_circuits(integer)'::regprocedure,
   'states of healthy circuits unchanged for circuits.state_retention')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function
  steward.circuit_allow(text),
  steward.circuit_record(text, boolean, text)
to steward_client;
