--! Previous: sha1:0c077dbb7538966bb77f2115d0c826ead26f337b
--! Hash: sha1:01d069056b98ee6bf90497394baa1bbeb5bb6c87
--! Message: rate limits

-- Rate limits: several windows per policy, consumed all-or-nothing; each window is GCRA (the
-- default: a burst, then an even pace) or exact (at most N in any rolling window, kept as the
-- times of the admitted hits). The windows live in a logged table; the moving state (arrival
-- times) in an UNLOGGED table: a crash of the server empties it, which only resets the windows.
--
-- Every client function locks the rows it decides on, reads the clock after it holds the
-- locks, and so is exact under any number of concurrent callers. In REPEATABLE READ or
-- SERIALIZABLE a concurrent change to the same row makes the call fail with a serialization
-- error (SQLSTATE 40001) instead of deciding on a stale snapshot.
--
-- A denied hit is counted in a row of its own window and key (never in a row callers share,
-- which would make them wait for each other), written only when a hit is denied, so admitted
-- hits pay nothing for it; cleanup folds the counts of keys that have gone quiet into per-window
-- totals (for /metrics) and hourly tallies of the most denied keys (for status).

-- The clock of rate limits, leases and circuits --------------------------------------------------

create function steward.clock_override(setting text)
returns timestamptz
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if not pg_catalog.pg_has_role(session_user,
           (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'steward'), 'MEMBER') then
    raise exception 'steward.clock is set in this session, but only sessions of the owner of schema steward may set the time'
      using errcode = '42501',
            hint = 'reset steward.clock: it is a test clock, and clients do not choose the time of their rate limits, leases or circuits.';
  end if;
  return setting::timestamptz;
end
$$;
comment on function steward.clock_override(text) is
  'The time a test set with `set steward.clock = ''…''`, honoured only in sessions of the owner of schema steward (a member of it, logged in as such): anyone else gets SQLSTATE 42501. Internal to steward.clock().';

-- Plain SQL without a SET clause, so the planner inlines it into the statements that call it:
-- where steward.clock is not set (always, outside tests) it costs one lookup of a setting.
create function steward.clock()
returns timestamptz
language sql
volatile
as $$
  select case when coalesce(pg_catalog.current_setting('steward.clock', true), '') = '' then pg_catalog.clock_timestamp()
              else steward.clock_override(pg_catalog.current_setting('steward.clock')) end
$$;
comment on function steward.clock() is
  'The time rate limits, leases and circuits decide by: clock_timestamp(), or in a test session of the schema owner the value of the setting steward.clock (`set steward.clock = ''2030-01-01 12:00:00+00''`), so tests pass time explicitly instead of sleeping through it.';


-- Tables ---------------------------------------------------------------------------------------

create table steward.rate_limit_windows (
  id           integer generated always as identity primary key,
  policy       text not null check (policy ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$'),
  max_requests integer not null check (max_requests > 0),
  per          interval not null,
  per_us       bigint not null check (per_us > 0),
  is_exact     boolean not null default false,
  updated_at   timestamptz not null default pg_catalog.now(),
  unique (policy, per_us),
  check (max_requests::numeric * per_us < 2::numeric ^ 60),
  check (not is_exact or max_requests <= 1000)
);
comment on table steward.rate_limit_windows is
  'Windows of the rate-limit policies, set by steward.set_rate_limit. A GCRA window admits a burst of max_requests, then one more every per/max_requests; an exact window admits at most max_requests in any rolling span of length per. A hit is admitted only when every window of its policy has room.';
comment on column steward.rate_limit_windows.per_us is
  'The window length in microseconds (months count as 30 days): it identifies the window within its policy.';
comment on column steward.rate_limit_windows.is_exact is
  'An exact window (a sliding log of the admitted hits'' times, at most 1000 per key) rather than GCRA.';

create unlogged table steward.rate_limit_state (
  window_id          integer not null,
  key                text not null,
  base_us            bigint not null,
  steps              integer not null,
  max_requests       integer not null,
  per_us             bigint not null,
  last_hit_us        bigint,
  last_hit_allowed   boolean,
  last_hit_cost      integer,
  last_hit_position  integer,
  hits_us            bigint[],
  primary key (window_id, key)
) with (fillfactor = 70);
comment on table steward.rate_limit_state is
  'The state of one window for one key. GCRA: the theoretical arrival time base_us + steps * per_us / max_requests (microseconds since 1970), kept as a whole step count so it stays exact. Exact windows: hits_us, the times of the admitted hits that may still count (one entry per unit of cost, oldest first), and base_us the newest of them. max_requests and per_us are copied from the window (they never change for a window id) so that one statement can decide. A row whose time has passed carries no state; cleanup_rate_limits removes it. Unlogged: a crash resets every window.';
comment on column steward.rate_limit_state.last_hit_us is
  'When the last hit was decided on this row (microseconds since 1970); last_hit_allowed says whether it was admitted. Only for inspection.';
comment on column steward.rate_limit_state.last_hit_position is
  'Set by the one-statement path of rate_limit_hits with last_hit_cost: the place of the last hit in its call and its cost, which that statement answers from (carrying them through the row costs less than joining each row back to its hit).';

create unlogged table steward.rate_limit_denials (
  window_id          integer not null,
  key                text not null,
  denied             bigint not null,
  denied_hour        integer not null,
  denied_in_hour     integer not null,
  denied_hour_before integer not null,
  primary key (window_id, key)
);
comment on table steward.rate_limit_denials is
  'Denied hits per window and key, written only when a hit is denied. A hit several windows refuse counts against the one that makes it wait longest, so the windows of a policy add up to its denied hits. denied_hour is the hour (hours since 1970) of the last denial, denied_in_hour the denials of that hour, denied_hour_before those of the hour before. Cleanup folds the rows of keys without state into the totals. Unlogged.';

create table steward.rate_limit_denial_totals (
  window_id integer primary key,
  policy    text not null,
  per_us    bigint not null,
  denied    bigint not null default 0
);
comment on table steward.rate_limit_denial_totals is
  'One row per rate-limit window ever set (it outlives the window): the denials of steward.rate_limit_denials rows that cleanup has folded. A window''s denials so far are this plus the denied of its rows there; steward.rate_limit_metrics() adds them up.';

create unlogged table steward.rate_limit_recent_denials (
  window_id integer not null,
  hour      integer not null,
  key       text not null,
  denials   bigint not null,
  primary key (window_id, hour, key)
);
comment on table steward.rate_limit_recent_denials is
  'Denials of the current and the previous hour of steward.rate_limit_denials rows that cleanup has folded, per window, hour and key: the keys with the most denials by name (at most rate_limits.denied_keys_kept per window and hour, as clients choose keys), the others added up under key ''''. For steward status. Unlogged.';

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('rate_limits.denied_keys_kept', '20', 'integer', '0', '1000',
   'Keys with the most denials kept per rate-limit window and hour for steward status once cleanup removes their state rows (0 to 1000).')
on conflict (name) do nothing;

-- Administration -------------------------------------------------------------------------------

create function steward.set_rate_limit(policy text, max_requests integer, per interval, exact boolean)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  window_us bigint;
  previous steward.rate_limit_windows;
  new_window integer;
begin
  if set_rate_limit.policy is null or set_rate_limit.max_requests is null or set_rate_limit.per is null
     or set_rate_limit.exact is null then
    raise exception 'set_rate_limit needs a policy, max_requests, per and exact, got (%, %, %, %)',
      coalesce(set_rate_limit.policy, 'null'), coalesce(set_rate_limit.max_requests::text, 'null'),
      coalesce(set_rate_limit.per::text, 'null'), coalesce(set_rate_limit.exact::text, 'null')
      using errcode = '22004';
  end if;
  if set_rate_limit.policy !~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$' then
    raise exception 'policy name "%" is not allowed', set_rate_limit.policy
      using errcode = '22023',
            hint = 'Use 1 to 100 characters: letters, digits and _ . : / -, starting with a letter or digit (it appears in HTTP headers).';
  end if;
  if set_rate_limit.max_requests <= 0 then
    raise exception 'max_requests must be positive, got %', set_rate_limit.max_requests using errcode = '22023';
  end if;
  if set_rate_limit.exact and set_rate_limit.max_requests > 1000 then
    raise exception 'an exact window admits at most 1000 requests, got %', set_rate_limit.max_requests
      using errcode = '22023',
            hint = 'An exact window keeps the time of every admitted hit of a key, 8 bytes each, rewritten on every hit; use a GCRA window (exact => false) for larger limits.';
  end if;
  window_us := (extract(epoch from set_rate_limit.per) * 1000000)::bigint;
  if window_us <= 0 then
    raise exception 'per must be a positive interval, got %', set_rate_limit.per using errcode = '22023';
  end if;
  if set_rate_limit.max_requests::numeric * window_us >= 2::numeric ^ 60 then
    raise exception 'a window of % per % is too large', set_rate_limit.max_requests, set_rate_limit.per
      using errcode = '22023', hint = 'max_requests times per in microseconds must stay below 2^60 (about 13 million per day).';
  end if;

  select * into previous from steward.rate_limit_windows w
   where w.policy = set_rate_limit.policy and w.per_us = window_us
     for update;
  if found and previous.max_requests = set_rate_limit.max_requests and previous.is_exact = set_rate_limit.exact then
    return;
  end if;
  -- A changed limit or kind is a new window (a new id): the old state rows no longer match any
  -- window and cleanup removes them, so the new window starts with every key's full burst.
  delete from steward.rate_limit_windows w where w.id = previous.id;
  insert into steward.rate_limit_windows (policy, max_requests, per, per_us, is_exact)
  values (set_rate_limit.policy, set_rate_limit.max_requests, set_rate_limit.per, window_us, set_rate_limit.exact)
  returning id into new_window;
  insert into steward.rate_limit_denial_totals (window_id, policy, per_us)
  values (new_window, set_rate_limit.policy, window_us);
  perform steward.audit('set_rate_limit', set_rate_limit.policy,
    pg_catalog.jsonb_build_object('max_requests', set_rate_limit.max_requests, 'per', set_rate_limit.per::text,
                                  'previous_max_requests', previous.max_requests)
    || case when set_rate_limit.exact or previous.is_exact
            then pg_catalog.jsonb_build_object('exact', set_rate_limit.exact, 'previous_exact', previous.is_exact)
            else '{}'::jsonb end);
end
$$;
comment on function steward.set_rate_limit(text, integer, interval, boolean) is
  'Adds or replaces the window of length per of a rate-limit policy. exact false (GCRA): a burst of max_requests, then one every per/max_requests. exact true: at most max_requests (1000 at most) in any rolling span of length per, however they are spread. A policy may hold several windows (10 per minute and 100 per hour), of either kind. Changing a window''s limit or kind starts it afresh for every key. Audited.';

create function steward.set_rate_limit(policy text, max_requests integer, per interval)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select steward.set_rate_limit(policy, max_requests, per, false)
$$;
comment on function steward.set_rate_limit(text, integer, interval) is
  'Adds or replaces the GCRA window of length per of a rate-limit policy: a burst of max_requests, then one every per/max_requests; set_rate_limit(policy, max_requests, per, exact => false). Audited.';

create function steward.drop_rate_limit(policy text, per interval default null)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  dropped integer;
begin
  if drop_rate_limit.policy is null then
    raise exception 'drop_rate_limit needs a policy' using errcode = '22004';
  end if;
  delete from steward.rate_limit_windows w
   where w.policy = drop_rate_limit.policy
     and (drop_rate_limit.per is null or w.per_us = (extract(epoch from drop_rate_limit.per) * 1000000)::bigint);
  get diagnostics dropped = row_count;
  if dropped > 0 then
    perform steward.audit('drop_rate_limit', drop_rate_limit.policy,
      pg_catalog.jsonb_build_object('per', drop_rate_limit.per::text, 'windows', dropped));
  end if;
  return dropped;
end
$$;
comment on function steward.drop_rate_limit(text, interval) is
  'Removes one window of a policy (per given) or the whole policy (per null); returns how many windows went. Their state rows are removed by cleanup. Audited.';

-- The GCRA arithmetic of the one-statement paths. Plain immutable SQL without a SET clause so
-- that the planner inlines them into the calling statement (a SET clause or SECURITY DEFINER
-- would turn each use into a function call per row); they run with the caller's rights and
-- touch no table.
create function steward.gcra_step(base_us bigint, steps integer, max_requests integer, per_us bigint, cost integer, now_us bigint)
returns table (ahead bigint, fits boolean, next_base_us bigint, next_steps integer)
language sql
immutable
as $$
  -- ahead = max_requests * (arrival time - now), never negative: a whole number, so exact. Each
  -- value is computed once, behind OFFSET 0: flattened, every use would get a copy of the
  -- expressions it builds on, and the executor compiles all the copies for every statement.
  select a.ahead, a.fits,
         -- max_requests steps make one whole period: fold them into the base so steps stays small.
         a.next_base_us + (a.next_steps / gcra_step.max_requests) * gcra_step.per_us,
         (a.next_steps % gcra_step.max_requests)::integer
    from (select x.ahead,
                 x.ahead + gcra_step.cost::bigint * gcra_step.per_us <= gcra_step.max_requests::bigint * gcra_step.per_us as fits,
                 case when x.ahead = 0 then gcra_step.now_us else gcra_step.base_us end as next_base_us,
                 case when x.ahead = 0 then gcra_step.cost::bigint else gcra_step.steps::bigint + gcra_step.cost end as next_steps
            from (select case when gcra_step.base_us + gcra_step.per_us <= gcra_step.now_us then 0::bigint
                              else greatest((gcra_step.base_us - gcra_step.now_us) * gcra_step.max_requests
                                            + gcra_step.steps::bigint * gcra_step.per_us, 0) end as ahead
                  offset 0) x
          offset 0) a
$$;
comment on function steward.gcra_step(bigint, integer, integer, bigint, integer, bigint) is
  'One GCRA step on a state row at now_us: ahead = max_requests * (arrival time - now) before the hit (0 when the arrival time has passed), whether a hit of cost fits, and the state after admitting it. Internal; inlined into rate_limit_hit and rate_limit_hits.';

create function steward.gcra_answer(ahead bigint, max_requests integer, per_us bigint, cost integer, allowed boolean)
returns table (remaining integer, retry_after_ms bigint, reset_ms bigint)
language sql
immutable
as $$
  -- ahead is max_requests * (arrival time - now) after the decision. Waits round up to the
  -- microsecond, then to the millisecond, so that waiting them is always enough.
  select ((gcra_answer.max_requests::bigint * gcra_answer.per_us - gcra_answer.ahead) / gcra_answer.per_us)::integer,
         case when gcra_answer.allowed then 0::bigint
              else (greatest(gcra_answer.ahead + gcra_answer.cost::bigint * gcra_answer.per_us
                             - gcra_answer.max_requests::bigint * gcra_answer.per_us + gcra_answer.max_requests - 1, 0)
                    / gcra_answer.max_requests + 999) / 1000 end,
         ((gcra_answer.ahead + gcra_answer.max_requests - 1) / gcra_answer.max_requests + 999) / 1000
$$;
comment on function steward.gcra_answer(bigint, integer, bigint, integer, boolean) is
  'What a window answers after a decision: remaining unit hits now, the wait until the same hit of cost fits (0 when allowed), and the time until the window is back to its full burst. Internal; inlined.';

create function steward.denial_tally(hour integer, in_hour integer, hour_before integer, now_us bigint, denials integer)
returns table (hour integer, in_hour integer, hour_before integer)
language sql
immutable
as $$
  select h.now_hour,
         case when denial_tally.hour = h.now_hour then denial_tally.in_hour + denial_tally.denials
              else denial_tally.denials end,
         case when denial_tally.hour = h.now_hour then denial_tally.hour_before
              when denial_tally.hour = h.now_hour - 1 then denial_tally.in_hour
              else 0 end
    from (select (denial_tally.now_us / 3600000000)::integer as now_hour) h
$$;
comment on function steward.denial_tally(integer, integer, integer, bigint, integer) is
  'The hourly denial counts of a state row (hour of the last denial, denials in it, denials in the hour before) after `denials` more at now_us. Internal; inlined.';

create function steward.count_denials(window_ids integer[], keys text[], denials integer[], now_us bigint)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  counted integer;
begin
  -- plpgsql keeps the statement's plan for the session: the one-statement path calls this once
  -- per denied hit. The caller holds the state rows of these keys, so no other call writes these
  -- rows now: the order of the writes cannot make two calls wait for each other.
  insert into steward.rate_limit_denials as d (window_id, key, denied, denied_hour, denied_in_hour, denied_hour_before)
  select u.window_id, u.key, u.denials, (count_denials.now_us / 3600000000)::integer, u.denials, 0
    from unnest(count_denials.window_ids, count_denials.keys, count_denials.denials) as u(window_id, key, denials)
   where u.denials > 0
   order by u.window_id, u.key collate "C"
      on conflict (window_id, key) do update
     set denied = d.denied + excluded.denied,
         (denied_hour, denied_in_hour, denied_hour_before) = (
           select t.hour, t.in_hour, t.hour_before
             from steward.denial_tally(d.denied_hour, d.denied_in_hour, d.denied_hour_before, count_denials.now_us,
                                       excluded.denied::integer) t);
  get diagnostics counted = row_count;
  return counted;
end
$$;
comment on function steward.count_denials(integer[], text[], integer[], bigint) is
  'Adds denials[i] denied hits at now_us to window window_ids[i], key keys[i]; returns how many rows it wrote. Internal: the rate-limit functions call it, holding the state rows of those keys.';

-- Client functions -----------------------------------------------------------------------------

create function steward.rate_limit_hits(policies text[], keys text[], costs integer[] default null)
returns table (
  hit              integer,
  allowed          boolean,
  remaining        integer,
  retry_after_ms   bigint,
  reset_ms         bigint,
  window_limits    integer[],
  window_per_ms    bigint[],
  window_remaining integer[],
  window_reset_ms  bigint[],
  error_code       text,
  error_message    text,
  error_hint       text
)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  hit_total   integer := coalesce(pg_catalog.cardinality(policies), 0);
  unit_costs  integer[];
  -- General path: one entry per (hit, window of its policy), ordered by hit then window
  -- length; slot numbers the distinct (window, key) pairs in lock order.
  entry_hit    integer[];
  entry_slot   integer[];
  entry_window integer[];
  entry_key    text[];
  entry_limit  bigint[];
  entry_per    bigint[];
  entry_cost   bigint[];
  entry_exact  boolean[];
  entry_policy text[];
  entry_problem text[];
  entry_total  integer;
  slot_window integer[] := '{}';
  slot_key    text[] := '{}';
  slot_limit  integer[] := '{}';
  slot_per    bigint[] := '{}';
  slot_exact  boolean[] := '{}';
  slot_base   bigint[];
  slot_steps  bigint[];
  slot_dirty  boolean[];
  -- Exact windows: the times still in the window before the batch, all slots one after the
  -- other (slot s holds slot_held[s] of them from slot_first[s]), and the units this batch
  -- admitted, all at now_us.
  slot_times  bigint[];
  slot_first  integer[];
  slot_held   integer[];
  slot_added  integer[];
  slot_denials integer[];
  slot_last_allowed boolean[];
  now_us      bigint;
  first_entry integer := 1;
  last_entry  integer;
  this_slot   integer;
  quota       bigint;
  period      bigint;
  spend       bigint;
  -- GCRA: N * (arrival time - now), the window's lateness scaled by its limit, before and after
  -- the hit. Exact: the units in the window, before and after.
  ahead       bigint[];
  ahead_after bigint[];
  wait_us     bigint;
  entry_wait  bigint;
  binding     integer;
  kept        bigint;
  oldest      bigint;
  new_base    bigint;
  new_steps   bigint;
  units_left  integer;
  refill_ms   bigint;
begin
  if hit_total = 0 then
    return;
  end if;
  if hit_total > 10000 then
    raise exception 'at most 10000 hits per call, got %', hit_total using errcode = '22023';
  end if;
  if coalesce(pg_catalog.cardinality(keys), 0) <> hit_total
     or (costs is not null and pg_catalog.cardinality(costs) <> hit_total) then
    raise exception 'policies, keys and costs must have the same length, got %, % and %',
      hit_total, coalesce(pg_catalog.cardinality(keys), 0), coalesce(pg_catalog.cardinality(costs)::text, 'null')
      using errcode = '22023';
  end if;
  unit_costs := coalesce(costs, pg_catalog.array_fill(1, array[hit_total]));

  -- Fast path, when every hit is valid, its policy has one GCRA window and no (policy, key)
  -- comes twice: each hit is then one row decided on its own, in one statement. ON CONFLICT
  -- locks the rows in (window, key) order and evaluates SET under the lock, where the clock is
  -- read once per row: the decision, the new state and the answer all use that one instant. A
  -- denied hit rewrites the row unchanged but for last_hit_*, so its answer comes from the
  -- locked version.
  return query
  with input as materialized (
    select h.ord::integer as hit_number, h.key, h.cost, w.id as window_id, w.max_requests, w.per_us, w.is_exact,
           count(*) over (partition by h.policy, h.key) as copies
      from unnest(policies, keys, unit_costs) with ordinality as h(policy, key, cost, ord)
      left join steward.rate_limit_windows w on w.policy = h.policy
  ),
  fit as (
    -- bool_and skips nulls: a null key or cost must count as a misfit, not be ignored.
    select coalesce(bool_and(coalesce(i.window_id is not null and i.copies = 1 and not i.is_exact and i.key <> ''
                                      and pg_catalog.octet_length(i.key) <= 1024 and i.cost > 0
                                      and i.cost <= i.max_requests, false)),
                    false) as ok
      from input i
  ),
  written as (
    insert into steward.rate_limit_state as s
           (window_id, key, base_us, steps, max_requests, per_us, last_hit_us, last_hit_allowed, last_hit_cost,
            last_hit_position)
    select i.window_id, i.key, c.now_us, i.cost, i.max_requests, i.per_us, c.now_us, true, i.cost, i.hit_number
      from input i
     cross join (select (extract(epoch from steward.clock()) * 1000000)::bigint as now_us) c
     where (select f.ok from fit f)
     order by i.window_id, i.key collate "C"
        on conflict (window_id, key) do update
       set (base_us, steps, last_hit_us, last_hit_allowed, last_hit_cost, last_hit_position) = (
             select case when g.fits then g.next_base_us else s.base_us end,
                    case when g.fits then g.next_steps else s.steps end,
                    c.now_us,
                    g.fits,
                    excluded.last_hit_cost,
                    excluded.last_hit_position
               from (select (extract(epoch from steward.clock()) * 1000000)::bigint as now_us) c
              cross join lateral steward.gcra_step(s.base_us, s.steps, s.max_requests, s.per_us, excluded.steps, c.now_us) g)
    returning s.window_id, s.key, s.base_us, s.steps, s.max_requests, s.per_us, s.last_hit_us, s.last_hit_allowed,
              s.last_hit_cost, s.last_hit_position
  )
  select w.last_hit_position, w.last_hit_allowed, a.remaining, a.retry_after_ms, a.reset_ms,
         array[w.max_requests], array[w.per_us / 1000], array[a.remaining], array[a.reset_ms],
         null::text, null::text, null::text
    from written w
   cross join lateral steward.gcra_step(w.base_us, w.steps, w.max_requests, w.per_us, w.last_hit_cost, w.last_hit_us) g
   cross join lateral steward.gcra_answer(g.ahead, w.max_requests, w.per_us, w.last_hit_cost, w.last_hit_allowed) a
   -- The first denied hit makes the denials of the batch be counted, in one call (a subquery
   -- that does not depend on the row runs once, when first needed; CASE decides the order): a
   -- batch without denials never runs it.
   where case when w.last_hit_allowed then true
              else (select steward.count_denials(pg_catalog.array_agg(d.window_id), pg_catalog.array_agg(d.key),
                                                 pg_catalog.array_agg(1), pg_catalog.max(d.last_hit_us))
                      from written d
                     where not d.last_hit_allowed) >= 0 end
   order by w.last_hit_position;
  if found then
    return;
  end if;

  -- General path: several windows per policy (all or nothing), exact windows, repeated keys (in
  -- order), bad hits (reported, not counted). Entries of valid hits get slots in (window, key) order.
  select pg_catalog.array_agg(e.hit_number), pg_catalog.array_agg(e.slot), pg_catalog.array_agg(e.window_id),
         pg_catalog.array_agg(e.key), pg_catalog.array_agg(e.max_requests), pg_catalog.array_agg(e.per_us),
         pg_catalog.array_agg(e.cost), pg_catalog.array_agg(e.is_exact), pg_catalog.array_agg(e.policy),
         pg_catalog.array_agg(e.problem)
    into entry_hit, entry_slot, entry_window, entry_key, entry_limit, entry_per, entry_cost, entry_exact,
         entry_policy, entry_problem
    from (
      select c.*,
             case when c.problem is null
                  then dense_rank() over (partition by c.problem is null order by c.window_id, c.key collate "C")::integer
             end as slot
        from (
          select h.ord::integer as hit_number, h.policy, h.key, h.cost, w.id as window_id, w.max_requests, w.per_us,
                 w.is_exact,
                 case
                   when h.policy is null then 'policy must not be null'
                   when h.key is null then 'key must not be null'
                   when h.cost is null then 'cost must not be null'
                   when h.key = '' then 'key must not be empty'
                   when pg_catalog.octet_length(h.key) > 1024 then
                     pg_catalog.format('key is %s bytes long; at most 1024 are allowed', pg_catalog.octet_length(h.key))
                   when h.cost <= 0 then pg_catalog.format('cost must be a positive integer, got %s', h.cost)
                   when w.id is null then pg_catalog.format('unknown rate-limit policy "%s"', h.policy)
                   when h.cost > min(w.max_requests) over (partition by h.ord) then 'cost exceeds the limit'
                 end as problem
            from unnest(policies, keys, unit_costs) with ordinality as h(policy, key, cost, ord)
            left join steward.rate_limit_windows w on w.policy = h.policy
        ) c
       order by c.hit_number, c.per_us
    ) e;
  entry_total := pg_catalog.cardinality(entry_hit);
  this_slot := (select max(u.slot) from unnest(entry_slot) as u(slot));
  if this_slot is not null then
    slot_window := pg_catalog.array_fill(null::integer, array[this_slot]);
    slot_key := pg_catalog.array_fill(null::text, array[this_slot]);
    slot_limit := pg_catalog.array_fill(null::integer, array[this_slot]);
    slot_per := pg_catalog.array_fill(null::bigint, array[this_slot]);
    slot_exact := pg_catalog.array_fill(null::boolean, array[this_slot]);
  end if;
  for entry in 1 .. entry_total loop
    this_slot := entry_slot[entry];
    if this_slot is not null and slot_window[this_slot] is null then
      slot_window[this_slot] := entry_window[entry];
      slot_key[this_slot] := entry_key[entry];
      slot_limit[this_slot] := entry_limit[entry];
      slot_per[this_slot] := entry_per[entry];
      slot_exact[this_slot] := entry_exact[entry];
    end if;
  end loop;

  if pg_catalog.cardinality(slot_window) > 0 then
    -- Lock every row the batch decides on, in (window, key) order so that two batches never
    -- wait on each other in a cycle; create the missing ones. WHERE false keeps the lock
    -- without writing a row version.
    insert into steward.rate_limit_state as s (window_id, key, base_us, steps, max_requests, per_us)
    select u.window_id, u.key, 0, 0, u.max_requests, u.per_us
      from unnest(slot_window, slot_key, slot_limit, slot_per) with ordinality as u(window_id, key, max_requests, per_us, slot)
     order by u.slot
        on conflict (window_id, key) do update set steps = s.steps where false;

    -- The clock is read once the rows are held: decisions on one key follow each other in time.
    now_us := (extract(epoch from steward.clock()) * 1000000)::bigint;

    select pg_catalog.array_agg(s.base_us order by u.slot), pg_catalog.array_agg(s.steps order by u.slot),
           pg_catalog.array_agg((select count(*)::integer from unnest(s.hits_us) t where t > now_us - s.per_us)
                                order by u.slot)
      into slot_base, slot_steps, slot_held
      from unnest(slot_window, slot_key) with ordinality as u(window_id, key, slot)
      join steward.rate_limit_state s on s.window_id = u.window_id and s.key = u.key;
    select coalesce(pg_catalog.array_agg(t.at order by u.slot, t.at), '{}')
      into slot_times
      from unnest(slot_window, slot_key) with ordinality as u(window_id, key, slot)
      join steward.rate_limit_state s on s.window_id = u.window_id and s.key = u.key
     cross join lateral unnest(s.hits_us) as t(at)
     where t.at > now_us - s.per_us;
    slot_first := pg_catalog.array_fill(1, array[pg_catalog.cardinality(slot_window)]);
    for this_slot in 2 .. pg_catalog.cardinality(slot_window) loop
      slot_first[this_slot] := slot_first[this_slot - 1] + slot_held[this_slot - 1];
    end loop;
    slot_added := pg_catalog.array_fill(0, array[pg_catalog.cardinality(slot_window)]);
    slot_denials := pg_catalog.array_fill(0, array[pg_catalog.cardinality(slot_window)]);
    slot_dirty := pg_catalog.array_fill(false, array[pg_catalog.cardinality(slot_window)]);
    slot_last_allowed := pg_catalog.array_fill(null::boolean, array[pg_catalog.cardinality(slot_window)]);
  end if;

  -- Hits in input order; the entries of one hit are first_entry .. last_entry.
  while first_entry <= entry_total loop
    last_entry := first_entry;
    while last_entry < entry_total and entry_hit[last_entry + 1] = entry_hit[first_entry] loop
      last_entry := last_entry + 1;
    end loop;

    hit := entry_hit[first_entry];
    allowed := null; remaining := null; retry_after_ms := null; reset_ms := null;
    window_limits := null; window_per_ms := null; window_remaining := null; window_reset_ms := null;
    error_code := null; error_message := entry_problem[first_entry]; error_hint := null;
    if error_message = 'cost exceeds the limit' then
      this_slot := first_entry;
      for entry in first_entry .. last_entry loop
        if entry_limit[entry] < entry_limit[this_slot] then
          this_slot := entry;
        end if;
      end loop;
      error_message := pg_catalog.format('cost %s exceeds the limit of policy "%s" (%s per %s): it could never be admitted',
                                         entry_cost[first_entry], entry_policy[first_entry], entry_limit[this_slot],
                                         pg_catalog.make_interval(secs => entry_per[this_slot] / 1000000.0));
    end if;
    if error_message is not null then
      error_code := case when error_message like '%must not be null' then '22004' else '22023' end;
      if error_message like 'unknown rate-limit policy%' then
        error_hint := 'Create it with steward.set_rate_limit(policy, max_requests, per).';
      end if;
    else
      allowed := true;
      wait_us := 0;
      binding := null;
      ahead := '{}';
      ahead_after := '{}';
      for entry in first_entry .. last_entry loop
        this_slot := entry_slot[entry];
        quota := entry_limit[entry];
        period := entry_per[entry];
        if entry_exact[entry] then
          -- Exact: the units in the window now; the hit fits when they leave room for its cost.
          kept := slot_held[this_slot] + slot_added[this_slot];
          spend := entry_cost[entry];
          ahead := ahead || kept;
          ahead_after := ahead_after || (kept + spend);
          if kept + spend > quota then
            -- It fits once the (kept + spend - quota) oldest units have left: the older ones are
            -- the stored times, the newer ones this batch's, all at now_us.
            oldest := case when kept + spend - quota <= slot_held[this_slot]
                           then slot_times[slot_first[this_slot] + (kept + spend - quota)::integer - 1]
                           else now_us end;
            entry_wait := oldest + period - now_us;
          else
            entry_wait := null;
          end if;
        else
          -- GCRA in integers scaled by the window's limit N: the arrival time is
          -- base + steps * P / N, so N * (arrival - now) = (base - now) * N + steps * P, exact.
          spend := entry_cost[entry] * period;
          if slot_base[this_slot] + period <= now_us then
            kept := 0;
          else
            kept := greatest((slot_base[this_slot] - now_us) * quota + slot_steps[this_slot] * period, 0);
          end if;
          ahead := ahead || kept;
          ahead_after := ahead_after || (kept + spend);
          if kept + spend > quota * period then
            -- The hit fits once N * (arrival - now) has drained to N * P - spend: round up to the microsecond.
            entry_wait := (kept + spend - quota * period + quota - 1) / quota;
          else
            entry_wait := null;
          end if;
        end if;
        if entry_wait is not null then
          allowed := false;
          -- The denial counts against the window that makes the hit wait longest.
          if binding is null or entry_wait > wait_us then
            binding := entry;
            wait_us := entry_wait;
          end if;
        end if;
      end loop;
      if not allowed then
        slot_denials[entry_slot[binding]] := slot_denials[entry_slot[binding]] + 1;
      end if;

      retry_after_ms := (wait_us + 999) / 1000;
      window_limits := '{}'; window_per_ms := '{}'; window_remaining := '{}'; window_reset_ms := '{}';
      for entry in first_entry .. last_entry loop
        this_slot := entry_slot[entry];
        quota := entry_limit[entry];
        period := entry_per[entry];
        slot_last_allowed[this_slot] := allowed;
        if entry_exact[entry] then
          if allowed then
            kept := ahead_after[entry - first_entry + 1];
            slot_added[this_slot] := slot_added[this_slot] + entry_cost[entry];
            slot_dirty[this_slot] := true;
          else
            kept := ahead[entry - first_entry + 1];
          end if;
          units_left := (quota - kept)::integer;
          -- Back to its full limit once the newest counted unit has left.
          refill_ms := case when slot_added[this_slot] > 0 then (period + 999) / 1000
                            when slot_held[this_slot] > 0
                            then (slot_times[slot_first[this_slot] + slot_held[this_slot] - 1] + period - now_us + 999) / 1000
                            else 0 end;
        else
          if allowed then
            kept := ahead_after[entry - first_entry + 1];
            if ahead[entry - first_entry + 1] = 0 then
              new_base := now_us;
              new_steps := entry_cost[entry];
            else
              new_base := slot_base[this_slot];
              new_steps := slot_steps[this_slot] + entry_cost[entry];
            end if;
            -- N steps make one whole period: fold them into base so steps stays below N.
            slot_base[this_slot] := new_base + (new_steps / quota) * period;
            slot_steps[this_slot] := new_steps % quota;
            slot_dirty[this_slot] := true;
          else
            kept := ahead[entry - first_entry + 1];
          end if;
          units_left := ((quota * period - kept) / period)::integer;
          refill_ms := ((kept + quota - 1) / quota + 999) / 1000;
        end if;
        window_limits := window_limits || quota::integer;
        window_per_ms := window_per_ms || (period / 1000);
        window_remaining := window_remaining || units_left;
        window_reset_ms := window_reset_ms || refill_ms;
        -- The answer describes the window closest to exhaustion (the longer reset on a tie).
        if remaining is null or units_left < remaining or (units_left = remaining and refill_ms > reset_ms) then
          remaining := units_left;
          reset_ms := refill_ms;
        end if;
      end loop;
    end if;

    return next;
    first_entry := last_entry + 1;
  end loop;

  if pg_catalog.cardinality(slot_window) > 0 then
    update steward.rate_limit_state s
       set base_us = case when u.exact then (case when u.added > 0 then now_us else s.base_us end) else u.base_us end,
           steps = case when u.exact then s.steps else u.steps end,
           hits_us = case when u.exact and u.added > 0
                          then array(select t from unnest(s.hits_us) t where t > now_us - s.per_us order by t)
                               || pg_catalog.array_fill(now_us, array[u.added])
                          else s.hits_us end,
           last_hit_us = now_us,
           last_hit_allowed = u.last_allowed
      from unnest(slot_window, slot_key, slot_exact, slot_base, slot_steps, slot_added, slot_dirty, slot_last_allowed)
             as u(window_id, key, exact, base_us, steps, added, dirty, last_allowed)
     where u.dirty and s.window_id = u.window_id and s.key = u.key;
    if 0 < any (slot_denials) then
      perform steward.count_denials(slot_window, slot_key, slot_denials, now_us);
    end if;
  end if;
end
$$;
comment on function steward.rate_limit_hits(text[], text[], integer[]) is
  'Batch form of rate_limit_hit: hit i is (policies[i], keys[i], costs[i] or 1); one row per hit, in input order, each the exact answer that hit would get alone, hits on one key applied in order. Rows are locked in (window, key) order, so concurrent batches never deadlock. A bad hit gets error_code/error_message (and consumes nothing) without failing the others. window_* arrays give every window of the policy, shortest first.';

create function steward.rate_limit_hit(policy text, key text, cost integer default 1)
returns table (allowed boolean, remaining integer, retry_after_ms bigint, reset_ms bigint)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  answer record;
begin
  -- A policy with one GCRA window needs one row: decide it in one statement, as rate_limit_hits
  -- does for a batch (the clock is read under the row lock). Anything else (several windows,
  -- an exact window, bad arguments) goes through rate_limit_hits.
  if rate_limit_hit.key <> '' and pg_catalog.octet_length(rate_limit_hit.key) <= 1024 and rate_limit_hit.cost > 0 then
    with written as (
      insert into steward.rate_limit_state as s
             (window_id, key, base_us, steps, max_requests, per_us, last_hit_us, last_hit_allowed)
      select w.id, rate_limit_hit.key, c.now_us, rate_limit_hit.cost, w.max_requests, w.per_us, c.now_us, true
        from steward.rate_limit_windows w
       cross join (select (extract(epoch from steward.clock()) * 1000000)::bigint as now_us) c
       where w.policy = rate_limit_hit.policy and w.max_requests >= rate_limit_hit.cost and not w.is_exact
         and not exists (select from steward.rate_limit_windows other where other.policy = w.policy and other.id <> w.id)
          on conflict (window_id, key) do update
         set (base_us, steps, last_hit_us, last_hit_allowed) = (
               select case when g.fits then g.next_base_us else s.base_us end,
                      case when g.fits then g.next_steps else s.steps end,
                      c.now_us,
                      g.fits
                 from (select (extract(epoch from steward.clock()) * 1000000)::bigint as now_us) c
                cross join lateral steward.gcra_step(s.base_us, s.steps, s.max_requests, s.per_us, excluded.steps, c.now_us) g)
      returning s.window_id, s.base_us, s.steps, s.max_requests, s.per_us, s.last_hit_us, s.last_hit_allowed
    )
    select w.window_id, w.last_hit_us, w.last_hit_allowed as allowed, a.remaining, a.retry_after_ms, a.reset_ms
      into answer
      from written w
     cross join lateral steward.gcra_step(w.base_us, w.steps, w.max_requests, w.per_us, rate_limit_hit.cost, w.last_hit_us) g
     cross join lateral steward.gcra_answer(g.ahead, w.max_requests, w.per_us, rate_limit_hit.cost, w.last_hit_allowed) a;
    if found and not answer.allowed then
      perform steward.count_denials(array[answer.window_id], array[rate_limit_hit.key], array[1], answer.last_hit_us);
    end if;
  end if;

  if answer is null then
    select * into answer
      from steward.rate_limit_hits(array[rate_limit_hit.policy], array[rate_limit_hit.key], array[rate_limit_hit.cost]);
    if answer.error_hint is not null then
      raise exception '%', answer.error_message using errcode = answer.error_code, hint = answer.error_hint;
    elsif answer.error_code is not null then
      raise exception '%', answer.error_message using errcode = answer.error_code;
    end if;
  end if;
  allowed := answer.allowed;
  remaining := answer.remaining;
  retry_after_ms := answer.retry_after_ms;
  reset_ms := answer.reset_ms;
  return next;
end
$$;
comment on function steward.rate_limit_hit(text, text, integer) is
  'Counts a hit of cost units against every window of policy for key, all or nothing. allowed: every window had room (a denied hit consumes nothing; it is counted as a denial of the window that makes it wait longest). remaining: further unit hits admitted right now; reset_ms: until that window is back to its full burst (both for the window closest to exhaustion). retry_after_ms: 0 when allowed, else the smallest wait after which the same hit succeeds if no other traffic comes (for an exact window, until its oldest counted hits have left it). Exact under any concurrency; the database clock decides.';

-- Cleanup --------------------------------------------------------------------------------------

create function steward.cleanup_rate_limits(batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  now_us bigint := (extract(epoch from steward.clock()) * 1000000)::bigint;
  this_hour integer := (now_us / 3600000000)::integer;
  removed bigint;
  folded bigint;
begin
  if batch_size is null or batch_size <= 0 then
    raise exception 'batch_size must be a positive integer, got %', coalesce(batch_size::text, 'null') using errcode = '22023';
  end if;
  -- A GCRA row's arrival time is before base_us + per_us (steps < max_requests), an exact row's
  -- newest time is base_us: past base_us + per_us the row carries no state. Rows of dropped or
  -- replaced windows carry none either.
  with doomed as (
    select s.window_id, s.key
      from steward.rate_limit_state s
     where s.base_us + s.per_us <= now_us
        or not exists (select from steward.rate_limit_windows w where w.id = s.window_id)
     limit batch_size
       for update skip locked
  ),
  removed as (
    delete from steward.rate_limit_state s
     using doomed d
     where s.window_id = d.window_id and s.key = d.key
    returning 1
  )
  select count(*) into removed from removed;
  if removed >= batch_size then
    return removed;
  end if;

  -- Denial counts of keys without state move to the window totals and the hourly tallies. A
  -- row being counted right now is skipped; one whose key gets state again later starts afresh.
  with doomed as (
    select d.window_id, d.key
      from steward.rate_limit_denials d
     where not exists (select from steward.rate_limit_state s where s.window_id = d.window_id and s.key = d.key)
     limit batch_size - removed
       for update skip locked
  ),
  gone as (
    delete from steward.rate_limit_denials d
     using doomed x
     where d.window_id = x.window_id and d.key = x.key
    returning d.window_id, d.key, d.denied, d.denied_hour, d.denied_in_hour, d.denied_hour_before
  ),
  totals as (
    update steward.rate_limit_denial_totals t
       set denied = t.denied + g.denied
      from (select g.window_id, sum(g.denied)::bigint as denied from gone g group by g.window_id) g
     where t.window_id = g.window_id
  ),
  tallied as (
    insert into steward.rate_limit_recent_denials as t (window_id, hour, key, denials)
    select g.window_id, b.hour, g.key, b.denials
      from gone g
     cross join lateral (values (g.denied_hour, g.denied_in_hour), (g.denied_hour - 1, g.denied_hour_before)) as b(hour, denials)
     where b.denials > 0 and b.hour >= this_hour - 1
        on conflict (window_id, hour, key) do update set denials = t.denials + excluded.denials
  )
  select count(*) into folded from gone;
  removed := removed + folded;
  if removed < batch_size then
    -- The last batch of a run: keep the tallies of the current and previous hour, and of those
    -- only the most denied keys by name; the others' denials go to key '' of their window.
    delete from steward.rate_limit_recent_denials t where t.hour < this_hour - 1;
    with ranked as (
      select r.window_id, r.hour, r.key,
             pg_catalog.row_number() over (partition by r.window_id, r.hour order by r.denials desc, r.key) as rank
        from steward.rate_limit_recent_denials r
       where r.key <> ''
    ),
    unnamed as (
      delete from steward.rate_limit_recent_denials t
       using ranked r
       where r.rank > steward.setting_integer('rate_limits.denied_keys_kept')
         and t.window_id = r.window_id and t.hour = r.hour and t.key = r.key
      returning t.window_id, t.hour, t.denials
    )
    insert into steward.rate_limit_recent_denials as t (window_id, hour, key, denials)
    select u.window_id, u.hour, '', sum(u.denials)::bigint from unnamed u group by u.window_id, u.hour
        on conflict (window_id, hour, key) do update set denials = t.denials + excluded.denials;
  end if;
  return removed;
end
$$;
comment on function steward.cleanup_rate_limits(integer) is
  'Deletes at most batch_size rate-limit state rows that carry no state (their time has passed, or their window is gone), then folds the denial counts of keys left without state into steward.rate_limit_denial_totals and steward.rate_limit_recent_denials (trimmed to the current and previous hour and the most denied keys). Returns how many rows went. Rows being hit right now are skipped.';

insert into steward.cleanup_steps (name, function, description) values
  ('rate_limits', 'steward.cleanup_rate_limits(integer)'::regprocedure,
   'rate-limit state rows whose time has passed or whose window is gone, and denial counts of keys without state (folded into totals)')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Operators: status and metrics ----------------------------------------------------------------

create function steward.rate_limit_window_name(policy text, per_us bigint)
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select policy || '/' || case when per_us % 1000000 = 0 then (per_us / 1000000)::text || 's'
                               else (per_us / 1000)::text || 'ms' end
$$;
comment on function steward.rate_limit_window_name(text, bigint) is
  'A window as the RateLimit headers name it: the policy and the window length, e.g. api/60s.';

create function steward.rate_limit_denials_last_hour(at timestamptz default null)
returns table (window_id integer, policy text, per_us bigint, key text, denials numeric)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- Hourly counts weighed as a sliding window: this hour's count, and the previous hour's times
  -- the part of it still within the last 60 minutes.
  with clock as (
    select (extract(epoch from coalesce(at, steward.clock())) * 1000000)::bigint as now_us
  ), hours as (
    select (c.now_us / 3600000000)::integer as this_hour,
           1 - (c.now_us % 3600000000)::numeric / 3600000000 as previous_weight
      from clock c
  ), counts as (
    select d.window_id, d.key, b.hour, b.denials
      from steward.rate_limit_denials d
     cross join hours h
     cross join lateral (values (d.denied_hour, d.denied_in_hour), (d.denied_hour - 1, d.denied_hour_before)) as b(hour, denials)
     where d.denied_hour >= h.this_hour - 1 and b.denials > 0
    union all
    select r.window_id, r.key, r.hour, r.denials
      from steward.rate_limit_recent_denials r
  )
  select c.window_id, t.policy, t.per_us, c.key,
         pg_catalog.round(sum(case when c.hour = h.this_hour then c.denials
                                   when c.hour = h.this_hour - 1 then c.denials * h.previous_weight
                                   else 0 end), 1)
    from counts c
   cross join hours h
   join steward.rate_limit_denial_totals t on t.window_id = c.window_id
   group by c.window_id, t.policy, t.per_us, c.key
  having sum(case when c.hour >= h.this_hour - 1 then c.denials else 0 end) > 0
$$;
comment on function steward.rate_limit_denials_last_hour(timestamptz) is
  'Denials of the last hour (before `at`, default now) per window and key, estimated from hourly counts as a sliding window (this hour''s count plus the previous hour''s weighed by the part of it still within the hour). Key '''' adds up the keys cleanup has folded that were not among the most denied: the rows add up to the window''s denials.';

create function steward.rate_limit_denial_summary(max_listed integer default 10)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with recent as (select * from steward.rate_limit_denials_last_hour())
  select pg_catalog.jsonb_build_object(
    'policies', coalesce((
      select pg_catalog.jsonb_agg(p order by p.denials desc, p.policy)
        from (select r.policy, pg_catalog.round(sum(r.denials))::bigint as denials,
                     pg_catalog.jsonb_object_agg(steward.rate_limit_window_name(r.policy, r.per_us),
                                                 pg_catalog.round(r.denials)::bigint) as by_window
                from (select r.policy, r.per_us, sum(r.denials) as denials from recent r group by r.policy, r.per_us) r
               group by r.policy
               order by 2 desc, 1
               limit greatest(max_listed, 0)) p), '[]'::jsonb),
    'keys', coalesce((
      select pg_catalog.jsonb_agg(k order by k.denials desc, k.policy, k.key)
        from (select r.policy, r.key, pg_catalog.round(sum(r.denials))::bigint as denials
                from recent r
               where r.key <> ''
               group by r.policy, r.key
               order by 3 desc, 1, 2
               limit greatest(max_listed, 0)) k), '[]'::jsonb))
$$;
comment on function steward.rate_limit_denial_summary(integer) is
  'Rate-limit denials of the last hour for steward status: the most denied policies (with their windows) and the most denied keys, at most max_listed of each. Estimated from hourly counts (see steward.rate_limit_denials_last_hour).';

create function steward.rate_limit_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- Labels are policies and window lengths, which the owner sets; keys, which clients choose,
  -- never become labels.
  select 'steward_rate_limit_denials_total', 'counter',
         'Rate-limit hits denied, by policy and by the window that denied them (per: the window length, e.g. 60s; a hit several windows refuse counts once, against the one that makes it wait longest). A server crash resets the part not yet folded by cleanup.',
         pg_catalog.jsonb_build_object('policy', t.policy,
                                       'per', pg_catalog.split_part(steward.rate_limit_window_name(t.policy, t.per_us), '/', -1)),
         (sum(t.denied) + coalesce(sum(l.denied), 0))::double precision
    from steward.rate_limit_denial_totals t
    left join (select d.window_id, sum(d.denied) as denied from steward.rate_limit_denials d
                group by d.window_id) l on l.window_id = t.window_id
   group by t.policy, t.per_us
$$;
comment on function steward.rate_limit_metrics() is
  'The rate-limit series of /metrics, in the shape every steward metric source returns (metric, kind, help, labels, value): steward_rate_limit_denials_total{policy,per}, cumulative (folded totals plus the rows of steward.rate_limit_denials).';

insert into steward.metric_sources (name, function, description) values
  ('rate_limits', 'steward.rate_limit_metrics()', 'rate-limit denials per policy and window')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function
  steward.rate_limit_hit(text, text, integer),
  steward.rate_limit_hits(text[], text[], integer[])
to steward_client;
