--! Previous: sha1:6f5d137795051800c292f9442a1c948109048613
--! Hash: sha1:3f56f8ba045e0902f51846ec479d956251af7f06
--! Message: circuits

-- Circuit breakers shared by every process. Their configuration lives in a logged table; their
-- states in an UNLOGGED table: a crash of the server closes every circuit. Transitions are
-- counted in a logged table (they are rare, and /metrics counts must not fall back).
--
-- Every client function locks the rows it decides on, reads the clock after it holds the
-- locks, and so is exact under any number of concurrent callers. In REPEATABLE READ or
-- SERIALIZABLE a concurrent change to the same row makes the call fail with a serialization
-- error (SQLSTATE 40001) instead of deciding on a stale snapshot.
--
-- Clients choose circuit names, so what they can create is bounded: states idle for
-- circuits.state_retention are removed by cleanup, and past circuits.max_circuits a client's
-- new name is refused. Names starting with `steward:` are the worker's own (the webhook sink's
-- steward:webhook:<host>): only the owner of schema steward may change them.

-- Settings -------------------------------------------------------------------------------------

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('circuits.state_retention', '7 days', 'interval', '0 seconds', '3650 days',
   'How long cleanup keeps a circuit''s state after its last activity (an outcome reported, a probe admitted), whatever its failures: an idle circuit is forgotten, which closes it.'),
  ('circuits.max_circuits', '10000', 'integer', '1', '1000000',
   'Most circuits with state (1 to 1000000). Past it, circuit_record refuses a client''s new circuit name with SQLSTATE 53400 and changes nothing; circuits of the schema owner (the worker''s) are never refused. steward verify warns from 80 %.'),
  ('circuits.metrics_top', '50', 'integer', '0', '1000',
   'Circuits that get their own label on /metrics (0 to 1000): the worker''s own steward: circuits first, then the most recently active; the others are summed under circuit="_other".')
on conflict (name) do nothing;

-- Tables ---------------------------------------------------------------------------------------

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
  state                text not null check (state in ('closed', 'open', 'half_open')),
  consecutive_failures integer not null default 0,
  opened_at            timestamptz,
  probes               timestamptz[] not null default '{}',
  changed_at           timestamptz not null,
  touched_at           timestamptz not null,
  last_error           text,
  last_failure_at      timestamptz
);
comment on table steward.circuit_states is
  'State of circuits that have failed at least once. A stored open state whose cooldown has passed since opened_at is half-open; it is stored as half_open once a call sees it so (that records the transition). probes holds when each admitted half-open probe stops counting (its admission plus the cooldown), so a probe whose caller died frees its slot. Unlogged: a crash closes every circuit.';
comment on column steward.circuit_states.touched_at is
  'The last activity: an outcome reported or a probe admitted. Cleanup removes states idle for circuits.state_retention.';

create unlogged table steward.circuit_census (
  singleton boolean primary key default true check (singleton),
  circuits  integer not null check (circuits >= 0)
);
comment on table steward.circuit_census is
  'How many rows steward.circuit_states holds, kept by its triggers so that the cap (circuits.max_circuits) costs one row read. A client creating a circuit locks this row, so creations (and only they) take turns. Unlogged like the states: after a crash both are empty.';
insert into steward.circuit_census (singleton, circuits) values (true, 0);

create function steward.count_circuit_states()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  change integer;
begin
  if tg_op = 'TRUNCATE' then
    update steward.circuit_census c set circuits = 0;
    return null;
  elsif tg_op = 'INSERT' then
    select pg_catalog.count(*) into change from added;
  else
    select -pg_catalog.count(*) into change from removed;
  end if;
  insert into steward.circuit_census as c (singleton, circuits) values (true, greatest(change, 0))
      on conflict (singleton) do update set circuits = greatest(c.circuits + change, 0);
  return null;
end
$$;
comment on function steward.count_circuit_states() is
  'Trigger function keeping steward.circuit_census equal to the number of circuit states.';

create trigger count_inserted after insert on steward.circuit_states
  referencing new table as added for each statement execute function steward.count_circuit_states();
create trigger count_deleted after delete on steward.circuit_states
  referencing old table as removed for each statement execute function steward.count_circuit_states();
create trigger count_truncated after truncate on steward.circuit_states
  for each statement execute function steward.count_circuit_states();

create table steward.circuit_transitions (
  circuit     text not null,
  from_state  text not null check (from_state in ('closed', 'open', 'half_open')),
  to_state    text not null check (to_state in ('closed', 'open', 'half_open')),
  transitions bigint not null check (transitions > 0),
  last_at     timestamptz not null,
  primary key (circuit, from_state, to_state)
);
comment on table steward.circuit_transitions is
  'How many times each circuit went from one state to another (closed → open, open → half_open, half_open → open or closed; a reset counts as a move to closed), each transition counted once by the call that made it. Counts of circuits forgotten by cleanup are added to the rows of circuit '''' (the empty name), so the totals never fall.';
comment on column steward.circuit_transitions.circuit is
  'The circuit, or '''' for circuits cleanup has forgotten.';

-- Helpers --------------------------------------------------------------------------------------

create function steward.caller_is_owner()
returns boolean
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- Inside a SECURITY DEFINER function current_user is the owner; the role the caller acts as is
  -- its SET ROLE (as PostgREST sets it) or else its login role.
  select pg_catalog.pg_has_role(
           case when pg_catalog.current_setting('role') = 'none' then session_user
                else pg_catalog.current_setting('role')::name end,
           (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'steward'),
           'MEMBER')
$$;
comment on function steward.caller_is_owner() is
  'Whether the role calling (its SET ROLE, else its login role) is, or is a member of, the owner of schema steward. Internal.';

create function steward.check_circuit_name(name text, action text)
returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if check_circuit_name.name is null or check_circuit_name.name = '' then
    raise exception 'circuit name must not be empty' using errcode = '22023';
  end if;
  if pg_catalog.length(check_circuit_name.name) > 200 then
    raise exception 'circuit name must have at most 200 characters' using errcode = '22023';
  end if;
  if pg_catalog.starts_with(check_circuit_name.name, 'steward:') and not steward.caller_is_owner() then
    raise exception 'circuit "%" is reserved: names starting with "steward:" belong to pg-steward''s worker, and only the owner of schema steward may % them',
      check_circuit_name.name, action
      using errcode = '42501',
            hint = 'Name your application''s circuits without the steward: prefix.';
  end if;
end
$$;
comment on function steward.check_circuit_name(text, text) is
  'Refuses an empty or over-long circuit name (22023), and a reserved steward: name unless the owner of schema steward calls (42501). Internal.';

create function steward.count_circuit_transition(circuit text, from_state text, to_state text, at timestamptz)
returns jsonb
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  insert into steward.circuit_transitions as t (circuit, from_state, to_state, transitions, last_at)
  values (circuit, from_state, to_state, 1, at)
      on conflict (circuit, from_state, to_state) do update
     set transitions = t.transitions + 1, last_at = excluded.last_at
  returning pg_catalog.jsonb_build_object('from', t.from_state, 'to', t.to_state)
$$;
comment on function steward.count_circuit_transition(text, text, text, timestamptz) is
  'Counts one transition of a circuit in steward.circuit_transitions; returns it as {"from", "to"}. Internal.';

create function steward.circuit_effective_state(stored text, opened_at timestamptz, cooldown interval, moment timestamptz)
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case
           when stored is null or stored = 'closed' then 'closed'
           when stored = 'half_open' or moment >= opened_at + cooldown then 'half_open'
           else 'open'
         end
$$;
comment on function steward.circuit_effective_state(text, timestamptz, interval, timestamptz) is
  'The state a circuit is in at the given moment: a stored open state whose cooldown has passed is half_open.';

-- Administration -------------------------------------------------------------------------------

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
  perform steward.check_circuit_name(circuit_configure.name, 'configure');
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
  'Creates or changes a circuit breaker: failure_threshold consecutive failures open it; after cooldown it is half-open and admits at most half_open_probes calls at once across all processes. Takes effect at once, also for a circuit already open. Names starting with steward: are reserved to the schema owner (42501). Audited.';

-- Client functions -----------------------------------------------------------------------------

create function steward.circuit_admit(name text)
returns table (allowed boolean, state text, transitions jsonb)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  circuit steward.circuit_states;
  cooldown interval;
  probe_limit integer;
  moment timestamptz;
  live timestamptz[];
begin
  perform steward.check_circuit_name(circuit_admit.name, 'use');
  -- The common case, a closed circuit, is one read and no write.
  select * into circuit from steward.circuit_states s where s.name = circuit_admit.name;
  if not found or circuit.state = 'closed' then
    return query select true, 'closed'::text, '[]'::jsonb;
    return;
  end if;
  select coalesce(c.cooldown, interval '60 seconds'), coalesce(c.half_open_probes, 1)
    into cooldown, probe_limit
    from (select) dummy left join steward.circuits c on c.name = circuit_admit.name;
  if circuit.state = 'open' and steward.clock() < circuit.opened_at + cooldown then
    return query select false, 'open'::text, '[]'::jsonb;
    return;
  end if;

  -- Half-open: claim a probe slot under the row lock, so the limit holds across processes.
  select * into circuit from steward.circuit_states s where s.name = circuit_admit.name for update;
  moment := steward.clock();
  case steward.circuit_effective_state(circuit.state, circuit.opened_at, cooldown, moment)
    when 'closed' then
      return query select true, 'closed'::text, '[]'::jsonb;
      return;
    when 'open' then
      return query select false, 'open'::text, '[]'::jsonb;
      return;
    else null;
  end case;
  live := array(select p from unnest(circuit.probes) p where p > moment);
  if pg_catalog.cardinality(live) >= probe_limit then
    return query select false, 'half_open'::text, '[]'::jsonb;
    return;
  end if;
  update steward.circuit_states s
     set state = 'half_open', probes = live || (moment + cooldown), touched_at = moment,
         changed_at = case when s.state = 'half_open' then s.changed_at else moment end
   where s.name = circuit_admit.name;
  return query
  select true, 'half_open'::text,
         case when circuit.state = 'open'
              then pg_catalog.jsonb_build_array(steward.count_circuit_transition(circuit_admit.name, 'open', 'half_open', moment))
              else '[]'::jsonb end;
end
$$;
comment on function steward.circuit_admit(text) is
  'circuit_allow with the transition it made: allowed, the state the call saw, and transitions, a JSON array of {"from", "to"} (open → half_open when this call is the first admitted after the cooldown; counted once, in steward.circuit_transitions). For clients that log transitions (the TypeScript client does).';

create function steward.circuit_report(name text, success boolean, error text default null)
returns table (state text, transitions jsonb)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  circuit steward.circuit_states;
  threshold integer;
  cooldown interval;
  limit_circuits integer;
  existing integer;
  moment timestamptz;
  effective text;
  made jsonb := '[]';
begin
  perform steward.check_circuit_name(circuit_report.name, 'record');
  if circuit_report.success is null then
    raise exception 'success must be true or false' using errcode = '22004';
  end if;
  select * into circuit from steward.circuit_states s where s.name = circuit_report.name;
  -- A success on a healthy circuit changes nothing: no write on the common path.
  if circuit_report.success and (not found or (circuit.state = 'closed' and circuit.consecutive_failures = 0)) then
    return query select 'closed'::text, made;
    return;
  end if;

  select coalesce(c.failure_threshold, 5), coalesce(c.cooldown, interval '60 seconds')
    into threshold, cooldown
    from (select) dummy left join steward.circuits c on c.name = circuit_report.name;
  if circuit.name is null then
    -- A new circuit. The census row is locked first (as every path adding or removing states
    -- does, so none waits in a cycle), so two creations cannot both take the last place.
    -- Clients may hold at most circuits.max_circuits; the owner's circuits are never refused.
    select c.circuits into existing from steward.circuit_census c for update;
    if not steward.caller_is_owner() then
      limit_circuits := steward.setting_integer('circuits.max_circuits');
      if coalesce(existing, 0) >= limit_circuits then
        raise exception 'too many circuits: % hold state and circuits.max_circuits is %, so circuit "%" was not created',
          existing, limit_circuits, circuit_report.name
          using errcode = '53400',
                hint = 'Circuits idle for circuits.state_retention are removed by the cleanup task; the database owner may raise circuits.max_circuits with steward.set_setting.';
      end if;
    end if;
    insert into steward.circuit_states (name, state, changed_at, touched_at)
    values (circuit_report.name, 'closed', steward.clock(), steward.clock())
        on conflict on constraint circuit_states_pkey do nothing;
  end if;
  select * into circuit from steward.circuit_states s where s.name = circuit_report.name for update;
  moment := steward.clock();
  effective := steward.circuit_effective_state(circuit.state, circuit.opened_at, cooldown, moment);
  if effective = 'half_open' and circuit.state = 'open' then
    -- Nobody was admitted since the cooldown ended: this outcome is the first to see it half-open.
    made := made || steward.count_circuit_transition(circuit_report.name, 'open', 'half_open', moment);
  end if;

  if circuit_report.success then
    if effective = 'open' then
      -- A late success of a call admitted before the circuit opened: the cooldown stands.
      return query select 'open'::text, made;
      return;
    end if;
    update steward.circuit_states s
       set state = 'closed', consecutive_failures = 0, probes = '{}', touched_at = moment,
           changed_at = case when effective = 'closed' then s.changed_at else moment end
     where s.name = circuit_report.name;
    if effective = 'half_open' then
      made := made || steward.count_circuit_transition(circuit_report.name, 'half_open', 'closed', moment);
    end if;
    return query select 'closed'::text, made;
    return;
  end if;

  if effective = 'open' then
    -- Late failures neither extend nor shorten the cooldown.
    update steward.circuit_states s
       set last_error = left(circuit_report.error, 2000), last_failure_at = moment, touched_at = moment
     where s.name = circuit_report.name;
    return query select 'open'::text, made;
    return;
  end if;
  if effective = 'half_open' or circuit.consecutive_failures + 1 >= threshold then
    update steward.circuit_states s
       set state = 'open', opened_at = moment, probes = '{}', changed_at = moment, touched_at = moment,
           consecutive_failures = s.consecutive_failures + 1,
           last_error = left(circuit_report.error, 2000), last_failure_at = moment
     where s.name = circuit_report.name;
    made := made || steward.count_circuit_transition(circuit_report.name, effective, 'open', moment);
    return query select 'open'::text, made;
    return;
  end if;
  update steward.circuit_states s
     set consecutive_failures = s.consecutive_failures + 1, touched_at = moment,
         last_error = left(circuit_report.error, 2000), last_failure_at = moment
   where s.name = circuit_report.name;
  return query select 'closed'::text, made;
end
$$;
comment on function steward.circuit_report(text, boolean, text) is
  'circuit_record with the transitions it made: the new state, and transitions, a JSON array of {"from", "to"} in order (e.g. half_open → closed), each counted once in steward.circuit_transitions. A client''s new circuit name past circuits.max_circuits is refused with SQLSTATE 53400; steward: names are the owner''s (42501).';

create function steward.circuit_allow(name text)
returns boolean
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select a.allowed from steward.circuit_admit(name) a
$$;
comment on function steward.circuit_allow(text) is
  'Whether a call through the circuit may go ahead: closed allows; open refuses until the cooldown has passed; half-open allows at most half_open_probes calls at once across all processes (a probe that never reports frees its slot after the cooldown). An unknown name is a closed circuit. Names starting with steward: are the worker''s: a client gets SQLSTATE 42501.';

create function steward.circuit_record(name text, success boolean, error text default null)
returns text
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select r.state from steward.circuit_report(name, success, error) r
$$;
comment on function steward.circuit_record(text, boolean, text) is
  'Reports the outcome of a call through the circuit and returns its new state (closed, open, half_open): failure_threshold consecutive failures open it; in half-open a success closes it and a failure opens it again; outcomes reported while open change nothing (they belong to calls admitted before it opened). A client''s new circuit name past circuits.max_circuits is refused with SQLSTATE 53400 (nothing changes); names starting with steward: are the worker''s (42501).';

-- Reading --------------------------------------------------------------------------------------

create function steward.circuit_state(name text)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select steward.circuit_effective_state(s.state, s.opened_at, coalesce(c.cooldown, interval '60 seconds'),
                                         steward.clock())
    from (select) dummy
    left join steward.circuit_states s on s.name = circuit_state.name
    left join steward.circuits c on c.name = circuit_state.name
$$;
comment on function steward.circuit_state(text) is
  'The state of a circuit now: closed, open or half_open. An unknown name is closed. For operators (not granted to steward_client).';

create view steward.circuit_status as
select coalesce(c.name, s.name) as name,
       steward.circuit_effective_state(s.state, s.opened_at, coalesce(c.cooldown, interval '60 seconds'),
                                       steward.clock()) as state,
       coalesce(s.consecutive_failures, 0) as consecutive_failures,
       coalesce(c.failure_threshold, 5) as failure_threshold,
       coalesce(c.cooldown, interval '60 seconds') as cooldown,
       coalesce(c.half_open_probes, 1) as half_open_probes,
       (select count(*)::integer from unnest(s.probes) p where p > steward.clock()) as probes_in_flight,
       s.opened_at,
       s.changed_at,
       s.touched_at as last_activity_at,
       s.last_error,
       s.last_failure_at,
       c.name is not null as is_configured,
       pg_catalog.starts_with(coalesce(c.name, s.name), 'steward:') as is_reserved
  from steward.circuits c
  full join steward.circuit_states s on s.name = c.name;
comment on view steward.circuit_status is
  'Every configured or once-failed circuit with its state now, failure count, probes in flight, last activity and last error; is_reserved marks the worker''s own steward: circuits.';

create function steward.circuit_reset(name text)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  previous text;
begin
  perform steward.check_circuit_name(circuit_reset.name, 'reset');
  -- The census first, as every path that adds or removes states takes it, so none waits in a cycle.
  perform from steward.circuit_census for update;
  select steward.circuit_state(circuit_reset.name) into previous;
  delete from steward.circuit_states s where s.name = circuit_reset.name;
  if previous <> 'closed' then
    perform steward.count_circuit_transition(circuit_reset.name, previous, 'closed', steward.clock());
  end if;
  perform steward.audit('circuit_reset', circuit_reset.name, pg_catalog.jsonb_build_object('previous_state', previous));
  return previous;
end
$$;
comment on function steward.circuit_reset(text) is
  'Closes a circuit by hand and forgets its failures; returns the state it was in (counted as a transition to closed when it was not closed). Names starting with steward: are reserved to the schema owner (42501). Audited.';

-- Cleanup --------------------------------------------------------------------------------------

create function steward.cleanup_circuits(batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  cutoff timestamptz;
  removed bigint;
  folded bigint;
begin
  if batch_size is null or batch_size <= 0 then
    raise exception 'batch_size must be a positive integer, got %', coalesce(batch_size::text, 'null') using errcode = '22023';
  end if;
  cutoff := steward.clock() - steward.setting_interval('circuits.state_retention');
  perform from steward.circuit_census for update;
  with doomed as (
    select s.name from steward.circuit_states s
     where s.touched_at < cutoff
     limit batch_size
       for update skip locked
  )
  delete from steward.circuit_states s using doomed d where s.name = d.name;
  get diagnostics removed = row_count;
  if removed >= batch_size then
    return removed;
  end if;
  -- Transition counts of circuits that are gone (no state, not configured) go to circuit '',
  -- so /metrics totals keep counting them while the table stays bounded.
  with gone as (
    delete from steward.circuit_transitions t
     where t.ctid = any (array(
             select g.ctid from steward.circuit_transitions g
              where g.circuit <> '' and g.last_at < cutoff
                and not exists (select from steward.circuit_states s where s.name = g.circuit)
                and not exists (select from steward.circuits c where c.name = g.circuit)
              limit batch_size - removed))
    returning t.from_state, t.to_state, t.transitions, t.last_at
  ), summed as (
    select g.from_state, g.to_state, sum(g.transitions)::bigint as transitions, max(g.last_at) as last_at, count(*) as rows
      from gone g group by g.from_state, g.to_state
  ), added as (
    insert into steward.circuit_transitions as t (circuit, from_state, to_state, transitions, last_at)
    select '', s.from_state, s.to_state, s.transitions, s.last_at from summed s
        on conflict (circuit, from_state, to_state) do update
       set transitions = t.transitions + excluded.transitions, last_at = greatest(t.last_at, excluded.last_at)
  )
  select coalesce(sum(s.rows), 0) into folded from summed s;
  return removed + folded;
end
$$;
comment on function steward.cleanup_circuits(integer) is
  'Deletes at most batch_size circuit states idle for circuits.state_retention (whatever their failures: a forgotten circuit is closed), then folds the transition counts of circuits that are gone into circuit ''''. Returns how many rows went.';

insert into steward.cleanup_steps (name, function, description) values
  ('circuits', 'steward.cleanup_circuits(integer)'::regprocedure,
   'circuit states idle for circuits.state_retention, and transition counts of forgotten circuits')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Operators: status, verification, metrics -------------------------------------------------------

create function steward.circuit_capacity()
returns table (circuits integer, max_circuits integer, used numeric)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(c.circuits, 0), m.max_circuits,
         pg_catalog.round(coalesce(c.circuits, 0)::numeric / greatest(m.max_circuits, 1), 4)
    from (select steward.setting_integer('circuits.max_circuits') as max_circuits) m
    left join steward.circuit_census c on true
$$;
comment on function steward.circuit_capacity() is
  'How many circuits hold state, the cap circuits.max_circuits, and the share of it used (0 to 1).';

create function steward.verify_circuits()
returns table (name text, status text, detail text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'circuit capacity',
         case when c.used >= 1 then 'fail' when c.used >= 0.8 then 'warn' else 'ok' end,
         pg_catalog.format('%s of %s circuits (circuits.max_circuits) hold state', c.circuits, c.max_circuits)
         || case when c.used >= 1
                 then ': clients'' new circuit names are refused (SQLSTATE 53400); fix: find who creates them in steward.circuit_status, lower circuits.state_retention or raise circuits.max_circuits'
                 when c.used >= 0.8
                 then ': near the cap, past which clients'' new circuit names are refused; fix: find who creates them in steward.circuit_status, lower circuits.state_retention or raise circuits.max_circuits'
                 else '' end
    from steward.circuit_capacity() c
$$;
comment on function steward.verify_circuits() is
  'The circuit check of steward.verify_installation: ok below 80 % of circuits.max_circuits, warn from 80 %, fail at the cap (clients'' new circuits are being refused).';

create function steward.circuit_summary(max_listed integer default 50)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'total', (select pg_catalog.count(*) from steward.circuit_status),
    'by_state', coalesce((select pg_catalog.jsonb_object_agg(s.state, s.n)
                            from (select c.state, pg_catalog.count(*) as n from steward.circuit_status c group by c.state) s),
                         '{}'::jsonb),
    'capacity', (select pg_catalog.to_jsonb(c) from steward.circuit_capacity() c),
    'listed', coalesce((
      select pg_catalog.jsonb_agg(l order by l.rank)
        from (select c.name, c.state, c.consecutive_failures, c.opened_at, c.last_error, c.last_activity_at,
                     pg_catalog.row_number() over (
                       order by c.state = 'closed', c.is_reserved desc, c.last_activity_at desc nulls last, c.name) as rank
                from steward.circuit_status c
               order by rank
               limit greatest(max_listed, 0)) l), '[]'::jsonb))
$$;
comment on function steward.circuit_summary(integer) is
  'Circuits for steward status: how many, how many in each state, the capacity, and at most max_listed of them (open and half-open first, then the worker''s own, then the most recently active).';

create function steward.circuit_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with circuit as (
    select c.name, c.state, c.is_reserved, c.last_activity_at from steward.circuit_status c
  ),
  labelled as (
    -- A circuit a client named "_other" is counted with the others, never labelled as itself.
    select c.name from circuit c
     where c.name <> '_other'
     order by c.is_reserved desc, c.last_activity_at desc nulls last, c.name
     limit greatest(steward.setting_integer('circuits.metrics_top'), 0)
  ),
  state_series as (
    select coalesce(l.name, '_other') as circuit, s.state, pg_catalog.count(*) filter (where c.state = s.state) as value
      from circuit c
      left join labelled l on l.name = c.name
     cross join (values ('closed'), ('open'), ('half_open')) as s(state)
     group by 1, 2
  ),
  transition_series as (
    select coalesce(l.name, '_other') as circuit, t.from_state, t.to_state, sum(t.transitions) as value
      from steward.circuit_transitions t
      left join labelled l on l.name = t.circuit
     group by 1, 2, 3
  )
  select 'steward_circuit_state', 'gauge',
         'State of each circuit breaker: 1 for the state it is in (closed, open, half_open), 0 for the others. Circuits past circuits.metrics_top are summed under circuit="_other" (how many are in each state).',
         pg_catalog.jsonb_build_object('circuit', s.circuit, 'state', s.state), s.value::double precision
    from state_series s
  union all
  select 'steward_circuit_transitions_total', 'counter',
         'Circuit transitions (closed to open, open to half_open, half_open to open or closed; a reset is a move to closed), each counted once by the call that made it. Circuits past circuits.metrics_top, and forgotten ones, are summed under circuit="_other".',
         pg_catalog.jsonb_build_object('circuit', t.circuit, 'from', t.from_state, 'to', t.to_state),
         t.value::double precision
    from transition_series t
  union all
  select 'steward_circuits', 'gauge',
         'Circuits holding state; clients'' new circuit names are refused at steward_circuits_limit.',
         '{}'::jsonb, c.circuits::double precision
    from steward.circuit_capacity() c
  union all
  select 'steward_circuits_limit', 'gauge', 'The setting circuits.max_circuits.', '{}'::jsonb,
         c.max_circuits::double precision
    from steward.circuit_capacity() c
$$;
comment on function steward.circuit_metrics() is
  'The circuit series of /metrics, in the shape every steward metric source returns (metric, kind, help, labels, value): steward_circuit_state{circuit,state}, steward_circuit_transitions_total{circuit,from,to}, steward_circuits and steward_circuits_limit. At most circuits.metrics_top circuits get their own label (the worker''s steward: circuits first, then the most recently active); the rest are summed under circuit="_other".';

insert into steward.metric_sources (name, function, description) values
  ('circuits', 'steward.circuit_metrics()', 'circuit states, transitions and the circuit count against its cap')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function
  steward.circuit_allow(text),
  steward.circuit_record(text, boolean, text),
  steward.circuit_admit(text),
  steward.circuit_report(text, boolean, text)
to steward_client;
