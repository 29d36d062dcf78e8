--! Previous: sha1:9dcbf8c75ae9ee7523ded209c937f72f19cb0e48
--! Hash: sha1:09c197d2a25b174e18ae919c466b63a43dba8ff7
--! Message: rate limits

-- Rate limits: GCRA, several windows per policy, consumed all-or-nothing. The windows live in a
-- logged table; the moving state (arrival times) in an UNLOGGED table: a crash of the server
-- empties it, which only resets the windows.
--
-- Every client function locks the rows it decides on, reads the clock after it holds the
-- locks, and so is exact under any number of concurrent callers. In REPEATABLE READ or
-- SERIALIZABLE a concurrent change to the same row makes the call fail with a serialization
-- error (SQLSTATE 40001) instead of deciding on a stale snapshot.

create table steward.rate_limit_windows (
  id           integer generated always as identity primary key,
  policy       text not null check (policy ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$'),
  max_requests integer not null check (max_requests > 0),
  per          interval not null,
  per_us       bigint not null check (per_us > 0),
  updated_at   timestamptz not null default pg_catalog.now(),
  unique (policy, per_us),
  check (max_requests::numeric * per_us < 2::numeric ^ 60)
);
comment on table steward.rate_limit_windows is
  'Windows of the rate-limit policies, set by steward.set_rate_limit: each admits a burst of max_requests, then one more every per/max_requests. A hit is admitted only when every window of its policy has room.';
comment on column steward.rate_limit_windows.per_us is
  'The window length in microseconds (months count as 30 days): it identifies the window within its policy.';

create unlogged table steward.rate_limit_state (
  window_id        integer not null,
  key              text not null,
  base_us          bigint not null,
  steps            integer not null,
  max_requests     integer not null,
  per_us           bigint not null,
  last_hit_us      bigint,
  last_hit_allowed boolean,
  primary key (window_id, key)
) with (fillfactor = 70);
comment on table steward.rate_limit_state is
  'GCRA state, one row per (window, key): the theoretical arrival time base_us + steps * per_us / max_requests (microseconds since 1970), kept as a whole step count so it stays exact. max_requests and per_us are copied from the window (they never change for a window id) so that one statement can decide. A row whose arrival time has passed carries no state; cleanup_rate_limits removes it. Unlogged: a crash resets every window.';
comment on column steward.rate_limit_state.last_hit_us is
  'When the last hit was decided on this row (microseconds since 1970); last_hit_allowed says whether it was admitted. Only for inspection.';

create function steward.set_rate_limit(policy text, max_requests integer, per interval)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  window_us bigint;
  previous steward.rate_limit_windows;
begin
  if set_rate_limit.policy is null or set_rate_limit.max_requests is null or set_rate_limit.per is null then
    raise exception 'set_rate_limit needs a policy, max_requests and per, got (%, %, %)',
      coalesce(set_rate_limit.policy, 'null'), coalesce(set_rate_limit.max_requests::text, 'null'),
      coalesce(set_rate_limit.per::text, 'null')
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
  if found and previous.max_requests = set_rate_limit.max_requests then
    return;
  end if;
  -- A changed limit is a new window (a new id): the old state rows no longer match any window
  -- and cleanup removes them, so the new limit starts with every key's full burst.
  delete from steward.rate_limit_windows w where w.id = previous.id;
  insert into steward.rate_limit_windows (policy, max_requests, per, per_us)
  values (set_rate_limit.policy, set_rate_limit.max_requests, set_rate_limit.per, window_us);
  perform steward.audit('set_rate_limit', set_rate_limit.policy,
    pg_catalog.jsonb_build_object('max_requests', set_rate_limit.max_requests, 'per', set_rate_limit.per::text,
                                  'previous_max_requests', previous.max_requests));
end
$$;
comment on function steward.set_rate_limit(text, integer, interval) is
  'Adds or replaces the window of length per of a rate-limit policy: a burst of max_requests, then one every per/max_requests. A policy may hold several windows (10 per minute and 100 per hour). Changing a window''s limit starts it afresh for every key. Audited.';

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
  -- ahead = max_requests * (arrival time - now), never negative: a whole number, so exact.
  select a.ahead,
         a.ahead + gcra_step.cost::bigint * gcra_step.per_us <= gcra_step.max_requests::bigint * gcra_step.per_us,
         -- max_requests steps make one whole period: fold them into the base so steps stays small.
         n.base_us + (n.steps / gcra_step.max_requests) * gcra_step.per_us,
         (n.steps % gcra_step.max_requests)::integer
    from (select case when gcra_step.base_us + gcra_step.per_us <= gcra_step.now_us then 0::bigint
                      else greatest((gcra_step.base_us - gcra_step.now_us) * gcra_step.max_requests
                                    + gcra_step.steps::bigint * gcra_step.per_us, 0) end as ahead) a
   cross join lateral (
         select case when a.ahead = 0 then gcra_step.now_us else gcra_step.base_us end as base_us,
                case when a.ahead = 0 then gcra_step.cost::bigint
                     else gcra_step.steps::bigint + gcra_step.cost end as steps) n
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
  entry_policy text[];
  entry_problem text[];
  entry_total  integer;
  slot_window integer[] := '{}';
  slot_key    text[] := '{}';
  slot_limit  integer[] := '{}';
  slot_per    bigint[] := '{}';
  slot_base   bigint[];
  slot_steps  bigint[];
  slot_dirty  boolean[];
  now_us      bigint;
  first_entry integer := 1;
  last_entry  integer;
  this_slot   integer;
  quota       bigint;
  period      bigint;
  spend       bigint;
  -- N * (arrival time - now), the window's lateness scaled by its limit, before and after the hit.
  ahead       bigint[];
  ahead_after bigint[];
  wait_us     bigint;
  kept        bigint;
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

  -- Fast path, when every hit is valid, its policy has one window and no (policy, key) comes
  -- twice: each hit is then one row decided on its own, in one statement. ON CONFLICT locks the
  -- rows in (window, key) order and evaluates SET under the lock, where the clock is read once
  -- per row: the decision, the new state and the answer all use that one instant. A denied hit
  -- rewrites the row unchanged (only last_hit_*), so its answer comes from the locked version.
  return query
  with input as materialized (
    select h.ord::integer as hit_number, h.key, h.cost, w.id as window_id, w.max_requests, w.per_us,
           count(*) over (partition by h.policy, h.key) as copies
      from unnest(policies, keys, unit_costs) with ordinality as h(policy, key, cost, ord)
      left join steward.rate_limit_windows w on w.policy = h.policy
  ),
  fit as (
    -- bool_and skips nulls: a null key or cost must count as a misfit, not be ignored.
    select coalesce(bool_and(coalesce(i.window_id is not null and i.copies = 1 and i.key <> ''
                                      and pg_catalog.octet_length(i.key) <= 1024 and i.cost > 0
                                      and i.cost <= i.max_requests, false)),
                    false) as ok
      from input i
  ),
  written as (
    insert into steward.rate_limit_state as s
           (window_id, key, base_us, steps, max_requests, per_us, last_hit_us, last_hit_allowed)
    select i.window_id, i.key, c.now_us, i.cost, i.max_requests, i.per_us, c.now_us, true
      from input i
     cross join (select (extract(epoch from pg_catalog.clock_timestamp()) * 1000000)::bigint as now_us) c
     where (select f.ok from fit f)
     order by i.window_id, i.key collate "C"
        on conflict (window_id, key) do update
       set (base_us, steps, last_hit_us, last_hit_allowed) = (
             select case when g.fits then g.next_base_us else s.base_us end,
                    case when g.fits then g.next_steps else s.steps end,
                    c.now_us,
                    g.fits
               from (select (extract(epoch from pg_catalog.clock_timestamp()) * 1000000)::bigint as now_us) c
              cross join lateral steward.gcra_step(s.base_us, s.steps, s.max_requests, s.per_us, excluded.steps, c.now_us) g)
    returning s.window_id, s.key, s.base_us, s.steps, s.max_requests, s.per_us, s.last_hit_us, s.last_hit_allowed
  )
  select i.hit_number, w.last_hit_allowed, a.remaining, a.retry_after_ms, a.reset_ms,
         array[w.max_requests], array[w.per_us / 1000], array[a.remaining], array[a.reset_ms],
         null::text, null::text, null::text
    from input i
    join written w on w.window_id = i.window_id and w.key = i.key
   cross join lateral steward.gcra_step(w.base_us, w.steps, w.max_requests, w.per_us, i.cost, w.last_hit_us) g
   cross join lateral steward.gcra_answer(g.ahead, w.max_requests, w.per_us, i.cost, w.last_hit_allowed) a
   order by i.hit_number;
  if found then
    return;
  end if;

  -- General path: several windows per policy (all or nothing), repeated keys (in order), bad
  -- hits (reported, not counted). Entries of valid hits get slots in (window, key) order.
  select pg_catalog.array_agg(e.hit_number), pg_catalog.array_agg(e.slot), pg_catalog.array_agg(e.window_id),
         pg_catalog.array_agg(e.key), pg_catalog.array_agg(e.max_requests), pg_catalog.array_agg(e.per_us),
         pg_catalog.array_agg(e.cost), pg_catalog.array_agg(e.policy), pg_catalog.array_agg(e.problem)
    into entry_hit, entry_slot, entry_window, entry_key, entry_limit, entry_per, entry_cost, entry_policy, entry_problem
    from (
      select c.*,
             case when c.problem is null
                  then dense_rank() over (partition by c.problem is null order by c.window_id, c.key collate "C")::integer
             end as slot
        from (
          select h.ord::integer as hit_number, h.policy, h.key, h.cost, w.id as window_id, w.max_requests, w.per_us,
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
  end if;
  for entry in 1 .. entry_total loop
    this_slot := entry_slot[entry];
    if this_slot is not null and slot_window[this_slot] is null then
      slot_window[this_slot] := entry_window[entry];
      slot_key[this_slot] := entry_key[entry];
      slot_limit[this_slot] := entry_limit[entry];
      slot_per[this_slot] := entry_per[entry];
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
    now_us := (extract(epoch from pg_catalog.clock_timestamp()) * 1000000)::bigint;

    select pg_catalog.array_agg(s.base_us order by u.slot), pg_catalog.array_agg(s.steps order by u.slot)
      into slot_base, slot_steps
      from unnest(slot_window, slot_key) with ordinality as u(window_id, key, slot)
      join steward.rate_limit_state s on s.window_id = u.window_id and s.key = u.key;
    slot_dirty := pg_catalog.array_fill(false, array[pg_catalog.cardinality(slot_window)]);
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
      -- GCRA in integers scaled by the window's limit N: the arrival time is
      -- base + steps * P / N, so N * (arrival - now) = (base - now) * N + steps * P, exact.
      allowed := true;
      wait_us := 0;
      ahead := '{}';
      ahead_after := '{}';
      for entry in first_entry .. last_entry loop
        this_slot := entry_slot[entry];
        quota := entry_limit[entry];
        period := entry_per[entry];
        spend := entry_cost[entry] * period;
        if slot_base[this_slot] + period <= now_us then
          kept := 0;
        else
          kept := greatest((slot_base[this_slot] - now_us) * quota + slot_steps[this_slot] * period, 0);
        end if;
        ahead := ahead || kept;
        ahead_after := ahead_after || (kept + spend);
        if kept + spend > quota * period then
          allowed := false;
          -- The hit fits once N * (arrival - now) has drained to N * P - spend: round up to the microsecond.
          wait_us := greatest(wait_us, (kept + spend - quota * period + quota - 1) / quota);
        end if;
      end loop;

      retry_after_ms := (wait_us + 999) / 1000;
      window_limits := '{}'; window_per_ms := '{}'; window_remaining := '{}'; window_reset_ms := '{}';
      for entry in first_entry .. last_entry loop
        this_slot := entry_slot[entry];
        quota := entry_limit[entry];
        period := entry_per[entry];
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
       set base_us = u.base_us, steps = u.steps, last_hit_us = now_us, last_hit_allowed = true
      from unnest(slot_window, slot_key, slot_base, slot_steps, slot_dirty) as u(window_id, key, base_us, steps, dirty)
     where u.dirty and s.window_id = u.window_id and s.key = u.key;
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
  -- A policy with one window needs one row: decide it in one statement, as rate_limit_hits
  -- does for a batch (the clock is read under the row lock). Anything else (several windows,
  -- bad arguments) goes through rate_limit_hits.
  if rate_limit_hit.key <> '' and pg_catalog.octet_length(rate_limit_hit.key) <= 1024 and rate_limit_hit.cost > 0 then
    return query
    with written as (
      insert into steward.rate_limit_state as s
             (window_id, key, base_us, steps, max_requests, per_us, last_hit_us, last_hit_allowed)
      select w.id, rate_limit_hit.key, c.now_us, rate_limit_hit.cost, w.max_requests, w.per_us, c.now_us, true
        from steward.rate_limit_windows w
       cross join (select (extract(epoch from pg_catalog.clock_timestamp()) * 1000000)::bigint as now_us) c
       where w.policy = rate_limit_hit.policy and w.max_requests >= rate_limit_hit.cost
         and not exists (select from steward.rate_limit_windows other where other.policy = w.policy and other.id <> w.id)
          on conflict (window_id, key) do update
         set (base_us, steps, last_hit_us, last_hit_allowed) = (
               select case when g.fits then g.next_base_us else s.base_us end,
                      case when g.fits then g.next_steps else s.steps end,
                      c.now_us,
                      g.fits
                 from (select (extract(epoch from pg_catalog.clock_timestamp()) * 1000000)::bigint as now_us) c
                cross join lateral steward.gcra_step(s.base_us, s.steps, s.max_requests, s.per_us, excluded.steps, c.now_us) g)
      returning s.base_us, s.steps, s.max_requests, s.per_us, s.last_hit_us, s.last_hit_allowed
    )
    select w.last_hit_allowed, a.remaining, a.retry_after_ms, a.reset_ms
      from written w
     cross join lateral steward.gcra_step(w.base_us, w.steps, w.max_requests, w.per_us, rate_limit_hit.cost, w.last_hit_us) g
     cross join lateral steward.gcra_answer(g.ahead, w.max_requests, w.per_us, rate_limit_hit.cost, w.last_hit_allowed) a;
    if found then
      return;
    end if;
  end if;

  select * into answer
    from steward.rate_limit_hits(array[rate_limit_hit.policy], array[rate_limit_hit.key], array[rate_limit_hit.cost]);
  if answer.error_hint is not null then
    raise exception '%', answer.error_message using errcode = answer.error_code, hint = answer.error_hint;
  elsif answer.error_code is not null then
    raise exception '%', answer.error_message using errcode = answer.error_code;
  end if;
  allowed := answer.allowed;
  remaining := answer.remaining;
  retry_after_ms := answer.retry_after_ms;
  reset_ms := answer.reset_ms;
  return next;
end
$$;
comment on function steward.rate_limit_hit(text, text, integer) is
  'Counts a hit of cost units against every window of policy for key, all or nothing. allowed: every window had room (a denied hit consumes nothing). remaining: further unit hits admitted right now; reset_ms: until that window is back to its full burst (both for the window closest to exhaustion). retry_after_ms: 0 when allowed, else the smallest wait after which the same hit succeeds if no other traffic comes. Exact under any concurrency; the database clock decides.';

create function steward.cleanup_rate_limits(batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  now_us bigint := (extract(epoch from pg_catalog.clock_timestamp()) * 1000000)::bigint;
  removed bigint;
begin
  if batch_size is null or batch_size <= 0 then
    raise exception 'batch_size must be a positive integer, got %', coalesce(batch_size::text, 'null') using errcode = '22023';
  end if;
  -- steps < max_requests, so the arrival time is before base_us + per_us: past that, the row
  -- carries no state. Rows of dropped or replaced windows carry none either.
  with doomed as (
    select s.window_id, s.key
      from steward.rate_limit_state s
     where s.base_us + s.per_us <= now_us
        or not exists (select from steward.rate_limit_windows w where w.id = s.window_id)
     limit batch_size
       for update skip locked
  )
  delete from steward.rate_limit_state s
   using doomed d
   where s.window_id = d.window_id and s.key = d.key;
  get diagnostics removed = row_count;
  return removed;
end
$$;
comment on function steward.cleanup_rate_limits(integer) is
  'Deletes at most batch_size rate-limit state rows that carry no state (arrival time passed, or window gone); returns how many. Rows being hit right now are skipped.';

insert into steward.cleanup_steps (name, function, description) values
  ('rate_limits', 'steward.cleanup_rate_limits(integer)'::regprocedure,
   'rate-limit state rows whose arrival time has passed or whose window is gone')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function
  steward.rate_limit_hit(text, text, integer),
  steward.rate_limit_hits(text[], text[], integer[])
to steward_client;
