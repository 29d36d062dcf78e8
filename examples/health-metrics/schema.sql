-- The health-metrics example: what pg-steward looks after in a product that receives samples
-- from wearables. Webhooks from several providers (apple_health, fitbit, garmin, oura, withings)
-- land in health_metrics.webhook_events and are normalized into health_metrics.samples; a
-- materialized view shows the latest value per user and metric; metric_confidence_cache holds a
-- confidence score per user and metric, recalculated for everyone by steward.
--
-- Not part of pg-steward's migrations: `npm start` installs it on the embedded database
-- (STEWARD_EXAMPLE). Every statement is idempotent, so it runs on every start; it needs pg-steward's
-- migrations first. Table names are schema-qualified throughout.

select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pg-steward example health-metrics'));

create schema if not exists health_metrics;
comment on schema health_metrics is
  'pg-steward''s example: wearable samples from several providers, the latest value per user and metric, and a confidence score per user and metric.';

-- What is measured, and the parameters of the confidence score -------------------------------

create table if not exists health_metrics.metrics (
  metric        text primary key,
  unit          text not null,
  expected_days integer not null check (expected_days between 1 and 7),
  half_life     interval not null check (half_life > '0 seconds'),
  tolerance     numeric not null check (tolerance > 0),
  typical       numeric not null,
  spread        numeric not null
);
comment on table health_metrics.metrics is
  'Each metric: its unit, the confidence parameters (expected_days of 7 with a sample, freshness half_life, agreement tolerance as a relative spread) and, for the synthetic data, a typical value and the spread between people.';

insert into health_metrics.metrics (metric, unit, expected_days, half_life, tolerance, typical, spread) values
  ('heart_rate',         'bpm',   7, '12 hours', 0.15,   72,    8),
  ('resting_heart_rate', 'bpm',   7, '1 day',    0.10,   60,    6),
  ('steps',              'steps', 7, '1 day',    0.20, 8000, 2500),
  ('sleep_minutes',      'min',   7, '1 day',    0.25,  420,   40),
  ('spo2',               '%',     5, '2 days',   0.03,   97,    1),
  ('weight',             'kg',    2, '7 days',   0.02,   75,   12)
on conflict (metric) do update
  set unit = excluded.unit, expected_days = excluded.expected_days, half_life = excluded.half_life,
      tolerance = excluded.tolerance, typical = excluded.typical, spread = excluded.spread;

create table if not exists health_metrics.provider_metrics (
  provider text not null,
  metric   text not null references health_metrics.metrics,
  share    integer not null check (share between 0 and 100),
  per_day  integer not null check (per_day > 0),
  day_rate numeric not null check (day_rate between 0 and 1),
  bias     numeric not null,
  noise    numeric not null,
  primary key (provider, metric)
);
comment on table health_metrics.provider_metrics is
  'For the synthetic data: which provider reports which metric, the share of users owning the provider (percent), samples per day, the chance a day has any, and the device''s bias and noise (relative).';

insert into health_metrics.provider_metrics (provider, metric, share, per_day, day_rate, bias, noise) values
  ('apple_health', 'heart_rate',         55, 3, 0.95,  0.00, 0.06),
  ('apple_health', 'resting_heart_rate', 55, 1, 0.90,  0.00, 0.03),
  ('apple_health', 'steps',              55, 1, 0.97,  0.02, 0.05),
  ('apple_health', 'spo2',               55, 1, 0.60,  0.00, 0.01),
  ('apple_health', 'weight',             55, 1, 0.15,  0.00, 0.003),
  ('fitbit',       'heart_rate',         30, 3, 0.90,  0.01, 0.07),
  ('fitbit',       'resting_heart_rate', 30, 1, 0.90,  0.03, 0.03),
  ('fitbit',       'steps',              30, 1, 0.95,  0.05, 0.05),
  ('fitbit',       'sleep_minutes',      30, 1, 0.85,  0.03, 0.06),
  ('garmin',       'heart_rate',         25, 3, 0.90, -0.02, 0.05),
  ('garmin',       'resting_heart_rate', 25, 1, 0.90, -0.02, 0.03),
  ('garmin',       'steps',              25, 1, 0.95, -0.03, 0.04),
  ('garmin',       'sleep_minutes',      25, 1, 0.80,  0.05, 0.06),
  ('garmin',       'spo2',               25, 1, 0.70, -0.01, 0.01),
  ('oura',         'heart_rate',         15, 2, 0.95,  0.00, 0.04),
  ('oura',         'resting_heart_rate', 15, 1, 0.95, -0.03, 0.02),
  ('oura',         'sleep_minutes',      15, 1, 0.95, -0.04, 0.04),
  ('oura',         'spo2',               15, 1, 0.90,  0.00, 0.01),
  ('withings',     'weight',             20, 1, 0.40,  0.00, 0.002),
  ('withings',     'heart_rate',         20, 1, 0.40,  0.00, 0.05)
on conflict (provider, metric) do update
  set share = excluded.share, per_day = excluded.per_day, day_rate = excluded.day_rate,
      bias = excluded.bias, noise = excluded.noise;

-- Webhooks and samples ------------------------------------------------------------------------

create table if not exists health_metrics.webhook_events (
  id          bigint generated always as identity primary key,
  provider    text not null,
  received_at timestamptz not null default pg_catalog.now(),
  body        jsonb not null,
  samples     integer
);
comment on table health_metrics.webhook_events is
  'Raw webhook deliveries, as received: {"user_id": 42, "samples": [{"metric", "value", "measured_at"}]}. samples: how many new samples it yielded.';

create table if not exists health_metrics.samples (
  user_id     bigint not null,
  metric      text not null references health_metrics.metrics,
  provider    text not null,
  value       numeric not null,
  measured_at timestamptz not null,
  primary key (user_id, metric, measured_at, provider)
);
comment on table health_metrics.samples is
  'One measurement of one metric of one user by one provider. Tracked by steward: writes enqueue the view''s refresh and a per-user cache tag.';

create or replace function health_metrics.ingest_webhook(provider text, body jsonb)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  event_id bigint;
  inserted integer;
begin
  if pg_catalog.jsonb_typeof(body->'user_id') is distinct from 'number' or pg_catalog.jsonb_typeof(body->'samples') is distinct from 'array' then
    raise exception 'a webhook body needs "user_id" (a number) and "samples" (an array)' using errcode = '22023';
  end if;
  insert into health_metrics.webhook_events (provider, body) values (ingest_webhook.provider, body)
  returning id into event_id;
  -- A provider resending a sample it sent before adds nothing.
  insert into health_metrics.samples (user_id, metric, provider, value, measured_at)
  select (body->>'user_id')::bigint, s.metric, ingest_webhook.provider, s.value, s.measured_at
    from pg_catalog.jsonb_to_recordset(body->'samples') as s(metric text, value numeric, measured_at timestamptz)
   where s.metric in (select m.metric from health_metrics.metrics m) and s.value is not null and s.measured_at is not null
  on conflict do nothing;
  get diagnostics inserted = row_count;
  update health_metrics.webhook_events e set samples = inserted where e.id = event_id;
  return inserted;
end
$$;
comment on function health_metrics.ingest_webhook(text, jsonb) is
  'Stores a provider''s webhook delivery and normalizes its samples into health_metrics.samples (unknown metrics and resent samples are skipped). Returns how many samples were new.';

-- The latest value per user and metric ---------------------------------------------------------

create materialized view if not exists health_metrics.latest_unified_metrics as
  select distinct on (s.user_id, s.metric)
         s.user_id, s.metric, s.value, m.unit, s.provider, s.measured_at
    from health_metrics.samples s
    join health_metrics.metrics m on m.metric = s.metric
   order by s.user_id, s.metric, s.measured_at desc, s.provider
  with no data;
comment on materialized view health_metrics.latest_unified_metrics is
  'The latest sample per user and metric, whichever provider sent it. Refreshed concurrently by steward when samples change.';
-- REFRESH … CONCURRENTLY needs a unique index on plain columns, without WHERE.
create unique index if not exists latest_unified_metrics_key on health_metrics.latest_unified_metrics (user_id, metric);

-- The confidence score --------------------------------------------------------------------------
-- confidence = completeness × freshness × agreement, each in [0, 1], over the 7 days before the
-- moment of computation (see docs/recalculation.md for the definition and a worked example).

create or replace function health_metrics.completeness(days_with_samples integer, expected_days integer)
returns numeric
language sql
immutable strict
as $$ select least(1, greatest(0, days_with_samples)::numeric / expected_days) $$;
comment on function health_metrics.completeness(integer, integer) is
  'Share of the expected days that had a sample: min(1, days_with_samples / expected_days).';

create or replace function health_metrics.freshness(age interval, half_life interval)
returns numeric
language sql
immutable strict
as $$
  select pg_catalog.power(0.5::numeric,
           greatest(0, extract(epoch from age))::numeric / extract(epoch from half_life)::numeric)
$$;
comment on function health_metrics.freshness(interval, interval) is
  'Halves every half_life since the latest sample: 0.5 ^ (age / half_life); 1 for a sample taken now (or in the future).';

create or replace function health_metrics.agreement(latest_values numeric[], tolerance numeric)
returns numeric
language sql
immutable strict
as $$
  select case when pg_catalog.count(v) < 2 or pg_catalog.max(v) = pg_catalog.min(v) then 1
              when pg_catalog.avg(v) = 0 then 0
              else greatest(0, 1 - (pg_catalog.max(v) - pg_catalog.min(v)) / abs(pg_catalog.avg(v)) / tolerance)
         end
    from pg_catalog.unnest(latest_values) as v
$$;
comment on function health_metrics.agreement(numeric[], numeric) is
  'How well the providers'' latest values agree: 1 - (max - min) / |mean| / tolerance, at least 0; 1 with fewer than two providers.';

create or replace function health_metrics.confidence(completeness numeric, freshness numeric, agreement numeric)
returns numeric
language sql
immutable strict
as $$ select round(completeness * freshness * agreement, 4) $$;
comment on function health_metrics.confidence(numeric, numeric, numeric) is
  'completeness × freshness × agreement, rounded to 4 decimals.';

create or replace function health_metrics.confidence_of(keys jsonb, as_of timestamptz)
returns table (user_id bigint, metric text, samples integer, days_with_samples integer, providers integer,
               latest_at timestamptz, completeness numeric, freshness numeric, agreement numeric, confidence numeric)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with k as (
    select distinct (e->>'user_id')::bigint as user_id, e->>'metric' as metric
      from pg_catalog.jsonb_array_elements(keys) as e
  ), w as (
    -- The 7 days before as_of.
    select s.user_id, s.metric, s.provider, s.value, s.measured_at
      from k join health_metrics.samples s on s.user_id = k.user_id and s.metric = k.metric
     where s.measured_at > as_of - interval '7 days' and s.measured_at <= as_of
  ), per_key as (
    -- Days are the seven 24-hour slots counted back from as_of.
    select w.user_id, w.metric, pg_catalog.count(*)::integer as samples,
           pg_catalog.count(distinct pg_catalog.floor(extract(epoch from as_of - w.measured_at) / 86400))::integer as days
      from w group by w.user_id, w.metric
  ), latest_per_provider as (
    select distinct on (w.user_id, w.metric, w.provider) w.user_id, w.metric, w.value
      from w order by w.user_id, w.metric, w.provider, w.measured_at desc
  ), agree as (
    select l.user_id, l.metric, pg_catalog.array_agg(l.value) as latest_values, pg_catalog.count(*)::integer as providers
      from latest_per_provider l group by l.user_id, l.metric
  ), latest as (
    select k.user_id, k.metric,
           (select pg_catalog.max(s.measured_at) from health_metrics.samples s
             where s.user_id = k.user_id and s.metric = k.metric and s.measured_at <= as_of) as latest_at
      from k
  )
  select l.user_id, l.metric, coalesce(p.samples, 0), coalesce(p.days, 0), coalesce(a.providers, 0), l.latest_at,
         round(f.completeness, 4), round(f.freshness, 4), round(f.agreement, 4),
         health_metrics.confidence(f.completeness, f.freshness, f.agreement)
    from latest l
    join health_metrics.metrics m on m.metric = l.metric
    left join per_key p on p.user_id = l.user_id and p.metric = l.metric
    left join agree a on a.user_id = l.user_id and a.metric = l.metric
   cross join lateral (
     select health_metrics.completeness(coalesce(p.days, 0), m.expected_days) as completeness,
            health_metrics.freshness(as_of - l.latest_at, m.half_life) as freshness,
            coalesce(health_metrics.agreement(a.latest_values, m.tolerance), 1) as agreement) as f
   where l.latest_at is not null
$$;
comment on function health_metrics.confidence_of(jsonb, timestamptz) is
  'The confidence score and its factors for the given keys ({"user_id", "metric"}) as of a moment. Keys with no sample at or before as_of yield no row.';

create table if not exists health_metrics.metric_confidence_cache (
  user_id           bigint not null,
  metric            text not null,
  confidence        numeric not null check (confidence between 0 and 1),
  completeness      numeric not null,
  freshness         numeric not null,
  agreement         numeric not null,
  providers         integer not null,
  samples           integer not null,
  computed_at       timestamptz not null default pg_catalog.now(),
  primary key (user_id, metric)
);
-- The checklist's column names, kept equal to the formula's by the database itself.
alter table health_metrics.metric_confidence_cache
  add column if not exists metric_name text generated always as (metric) stored,
  add column if not exists confidence_score numeric generated always as (confidence) stored;
comment on column health_metrics.metric_confidence_cache.metric_name is 'The checklist''s name for metric (generated).';
comment on column health_metrics.metric_confidence_cache.confidence_score is 'The checklist''s name for confidence (generated).';
comment on table health_metrics.metric_confidence_cache is
  'Confidence per user and metric as of computed_at, kept by the metric_confidence recalculation (health_metrics.recalculate_confidence).';

create or replace function health_metrics.recalculate_confidence(keys jsonb)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with computed as materialized (
    select * from health_metrics.confidence_of(keys, pg_catalog.now())
  ), written as (
    insert into health_metrics.metric_confidence_cache as c
      (user_id, metric, confidence, completeness, freshness, agreement, providers, samples, computed_at)
    select x.user_id, x.metric, x.confidence, x.completeness, x.freshness, x.agreement, x.providers, x.samples, pg_catalog.now()
      from computed x
    on conflict (user_id, metric) do update
      set confidence = excluded.confidence, completeness = excluded.completeness, freshness = excluded.freshness,
          agreement = excluded.agreement, providers = excluded.providers, samples = excluded.samples,
          computed_at = excluded.computed_at
    returning 1
  ), removed as (
    -- A key with no samples left has no score.
    delete from health_metrics.metric_confidence_cache c
     using pg_catalog.jsonb_array_elements(keys) as e
     where c.user_id = (e->>'user_id')::bigint and c.metric = e->>'metric'
       and not exists (select from computed x where x.user_id = c.user_id and x.metric = c.metric)
    returning 1
  )
  select (select pg_catalog.count(*) from written)::integer
$$;
comment on function health_metrics.recalculate_confidence(jsonb) is
  'The compute function of the metric_confidence recalculation: recomputes the cached confidence of a batch of keys ({"user_id", "metric"}) as of now, and removes the rows of keys that have no samples.';

-- Synthetic data and traffic -------------------------------------------------------------------

create or replace function health_metrics.owns(user_id bigint, provider text)
returns boolean
language sql
stable strict
as $$
  -- About 2 providers per user, from the providers' shares; everyone has at least one.
  select pg_catalog.abs(pg_catalog.hashtext(user_id::text || ':' || provider)) % 100
           < (select pg_catalog.max(pm.share) from health_metrics.provider_metrics pm where pm.provider = owns.provider)
      or provider = (array['apple_health', 'fitbit', 'garmin'])[1 + (user_id % 3)::integer]
$$;
comment on function health_metrics.owns(bigint, text) is 'For the synthetic data: whether the user has a device of this provider (fixed per user).';

create or replace function health_metrics.generate(users integer, days integer default 10)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  inserted bigint;
begin
  insert into health_metrics.samples (user_id, metric, provider, value, measured_at)
  with people as materialized (
    -- How consistently each person wears their devices.
    select u::bigint as user_id, 0.55 + 0.45 * pg_catalog.random() as adherence
      from pg_catalog.generate_series(1, users) as u
  ), baselines as materialized (
    -- Each person's own level of each metric: roughly normal around the typical value.
    select p.user_id, p.adherence, m.metric, m.typical + m.spread * 2 * (pg_catalog.random() + pg_catalog.random() + pg_catalog.random() - 1.5) as level
      from people p cross join health_metrics.metrics m
  ), devices as materialized (
    -- When each device last synced: mostly within hours, a few days ago for some.
    select b.user_id, b.adherence, b.metric, b.level, pm.provider, pm.per_day, pm.day_rate, pm.bias, pm.noise,
           pg_catalog.now() - pg_catalog.make_interval(secs => 345600 * pg_catalog.power(pg_catalog.random(), 4)) as synced_at
      from baselines b join health_metrics.provider_metrics pm on pm.metric = b.metric
     where health_metrics.owns(b.user_id, pm.provider)
  ), device_days as materialized (
    -- Drawn per device and day (a volatile condition on devices alone would be drawn per device).
    select d.*, day, pg_catalog.random() as draw
      from devices d cross join pg_catalog.generate_series(0, days - 1) as day
  )
  select d.user_id, d.metric, d.provider,
         pg_catalog.round((d.level * (1 + d.bias) * (1 + d.noise * 2 * (pg_catalog.random() - 0.5)))::numeric,
                          case when d.metric = 'steps' then 0 else 1 end),
         d.synced_at - pg_catalog.make_interval(days => d.day, secs => 86400 * pg_catalog.random())
    from device_days d
   cross join lateral pg_catalog.generate_series(1, d.per_day) as n
   where d.draw < d.day_rate * d.adherence
  on conflict do nothing;
  get diagnostics inserted = row_count;
  refresh materialized view health_metrics.latest_unified_metrics;
  analyze health_metrics.samples;
  return inserted;
end
$$;
comment on function health_metrics.generate(integer, integer) is
  'Fills health_metrics.samples with `days` days of synthetic history for users 1 to `users` (set-based, a few seconds for thousands of users), then populates the view. Returns how many samples it inserted.';

create or replace function health_metrics.simulate_traffic(events integer)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  users bigint := (select pg_catalog.max(s.user_id) from health_metrics.samples s);
  delivery record;
  inserted integer := 0;
begin
  if users is null then
    return 0;
  end if;
  -- Each event: one user's device sending its latest readings (near the user's latest values).
  for delivery in
    select pick.provider, pg_catalog.jsonb_build_object('user_id', pick.user_id, 'samples', pg_catalog.jsonb_agg(
             pg_catalog.jsonb_build_object(
               'metric', pm.metric,
               'value', pg_catalog.round((coalesce(last.value, m.typical) * (1 + pm.noise * 2 * (pg_catalog.random() - 0.5)))::numeric,
                                         case when pm.metric = 'steps' then 0 else 1 end),
               'measured_at', pg_catalog.now() - pg_catalog.make_interval(secs => 300 * pg_catalog.random())))) as body
      from (select e, 1 + (pg_catalog.random() * (users - 1))::bigint as user_id,
                   (array['apple_health', 'fitbit', 'garmin', 'oura', 'withings'])[1 + (pg_catalog.random() * 4)::integer] as candidate
              from pg_catalog.generate_series(1, events) as e) as raw
     cross join lateral (
       select raw.e, raw.user_id,
              case when health_metrics.owns(raw.user_id, raw.candidate) then raw.candidate
                   else (array['apple_health', 'fitbit', 'garmin'])[1 + (raw.user_id % 3)::integer] end as provider) as pick
      join health_metrics.provider_metrics pm on pm.provider = pick.provider
      join health_metrics.metrics m on m.metric = pm.metric
      left join lateral (
        select s.value from health_metrics.samples s
         where s.user_id = pick.user_id and s.metric = pm.metric and s.provider = pick.provider
         order by s.measured_at desc limit 1) as last on true
     group by pick.e, pick.user_id, pick.provider
  loop
    inserted := inserted + health_metrics.ingest_webhook(delivery.provider, delivery.body);
  end loop;
  return inserted;
end
$$;
comment on function health_metrics.simulate_traffic(integer) is
  'Sends `events` synthetic webhook deliveries through ingest_webhook, for random users and their devices. Returns how many samples were new.';

-- The checklist's names ------------------------------------------------------------------------
-- Its queries are unqualified (select * from background_jobs_dlq): install appends
-- health_metrics to the database's search_path (new sessions), and remove takes it out again.

create or replace view health_metrics.background_jobs_dlq as
  select d.id, d.task_identifier, d.payload, d.queue_name, d.attempts, d.max_attempts, d.last_error,
         d.failed_at, d.replayed_at, d.replayed_as, d.is_permanent, d.original_id
    from steward.dead_letters d
   where d.source = 'job'
     and (d.task_identifier = 'webhook-terra'
          or (d.task_identifier = 'recalculate' and d.payload ->> 'name' = 'metric_confidence')
          or (d.task_identifier = 'recalculate_batch'
              and (d.payload ->> 'run')::bigint in (select r.id from steward.recalc_runs r where r.name = 'metric_confidence')));
comment on view health_metrics.background_jobs_dlq is
  'The dead letters of the example''s jobs (webhook-terra, and the metric_confidence recalculation''s recalculate and recalculate_batch jobs): steward.dead_letters narrowed to them. Replay with steward.replay_dead_letter(id).';

create or replace view health_metrics.job_processing_stats as
  select j.day as date, j.task, j.completed, j.failed, j.retried, j.avg_ms, j.p95_ms
    from steward.job_stats j;
comment on view health_metrics.job_processing_stats is
  'Per UTC day (date) and task: completed, failed and retried attempts with avg_ms and p95_ms, as steward''s workers count them (steward.job_stats).';

create or replace function health_metrics.cleanup_rate_limits()
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  total bigint := 0;
  removed bigint;
begin
  -- steward's cleanup works in batches so that no statement holds its locks long; this one
  -- runs batches until a batch finds nothing, for a person at a prompt.
  loop
    removed := steward.cleanup_rate_limits(5000);
    total := total + removed;
    exit when removed < 5000;
  end loop;
  return total;
end
$$;
comment on function health_metrics.cleanup_rate_limits() is
  'The checklist''s cleanup_rate_limits() with no arguments: runs steward.cleanup_rate_limits in batches of 5000 until done; returns how many rate-limit rows it removed in all.';

-- Who may read whose rows: admins everything, trainers their clients'. Roles are named here,
-- not created: the operator grants them SELECT and lists them (roles are cluster-wide).
create table if not exists health_metrics.staff (
  role_name name primary key,
  kind      text not null check (kind in ('admin', 'trainer'))
);
comment on table health_metrics.staff is 'Database roles that read the example''s data: admin (every row) or trainer (their clients'' rows).';
create table if not exists health_metrics.trainer_clients (
  trainer name not null references health_metrics.staff (role_name) on delete cascade,
  user_id bigint not null,
  primary key (trainer, user_id)
);
comment on table health_metrics.trainer_clients is 'The users each trainer may see.';

create or replace function health_metrics.may_see(viewer name, user_id bigint)
returns boolean
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  viewer_kind text;
begin
  -- The policies pass current_user as evaluated for the querying role (inside this function,
  -- which runs as its owner to read the staff tables, current_user is the owner).
  select s.kind into viewer_kind from health_metrics.staff s where s.role_name = may_see.viewer;
  if viewer_kind is null then
    raise exception 'role % is neither an admin nor a trainer of the health-metrics example', may_see.viewer
      using errcode = '42501',
            hint = 'An owner adds it: insert into health_metrics.staff (role_name, kind) values (''<role>'', ''admin'' or ''trainer'').';
  end if;
  return viewer_kind = 'admin'
      or exists (select from health_metrics.trainer_clients c
                  where c.trainer = may_see.viewer and c.user_id = may_see.user_id);
end
$$;
comment on function health_metrics.may_see(name, bigint) is
  'The admin_trainer policies'' test for the querying role (viewer): true for an admin, for a trainer of this user; refuses (42501) a role that is neither. Executable by everyone, as policies need: it tells only whether viewer may see user_id.';

do $$
declare
  target text;
begin
  foreach target in array array['samples', 'metric_confidence_cache', 'webhook_events'] loop
    execute pg_catalog.format('alter table health_metrics.%I enable row level security', target);
    execute pg_catalog.format('drop policy if exists admin_trainer_read on health_metrics.%I', target);
  end loop;
  create policy admin_trainer_read on health_metrics.samples for select using (health_metrics.may_see(current_user, user_id));
  create policy admin_trainer_read on health_metrics.metric_confidence_cache for select using (health_metrics.may_see(current_user, user_id));
  create policy admin_trainer_read on health_metrics.webhook_events for select
    using (health_metrics.may_see(current_user, (body ->> 'user_id')::bigint));
end
$$;

-- The webhook-terra path: a signed delivery in; samples stored (and so invalidated through
-- tracking), and a recalculation of the keys it touched enqueued.
create table if not exists health_metrics.webhook_secrets (
  provider text primary key,
  secret   text not null check (secret <> '')
);
comment on table health_metrics.webhook_secrets is 'The shared secret each provider signs its deliveries with (HMAC-SHA256, hex).';
revoke all on health_metrics.webhook_secrets from public;

create or replace function health_metrics.hmac_sha256(secret bytea, message bytea)
returns text
language sql
immutable
strict
set search_path = pg_catalog, pg_temp
as $$
  -- RFC 2104 with the built-in sha256 (no pgcrypto needed): keys longer than the block are hashed.
  with k as (
    select pg_catalog.rpad(pg_catalog.encode(case when pg_catalog.length(secret) > 64 then pg_catalog.sha256(secret) else secret end, 'hex'),
                           128, '0') as key_hex
  ), pads as (
    select pg_catalog.decode(pg_catalog.string_agg(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.get_byte(pg_catalog.decode(k.key_hex, 'hex'), i) # 54), 2, '0'), '' order by i), 'hex') as ipad,
           pg_catalog.decode(pg_catalog.string_agg(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.get_byte(pg_catalog.decode(k.key_hex, 'hex'), i) # 92), 2, '0'), '' order by i), 'hex') as opad
      from k, pg_catalog.generate_series(0, 63) as i
  )
  select pg_catalog.encode(pg_catalog.sha256(pads.opad || pg_catalog.sha256(pads.ipad || message)), 'hex') from pads
$$;
comment on function health_metrics.hmac_sha256(bytea, bytea) is 'HMAC-SHA256 of message under secret, as lower-case hex.';

create or replace function health_metrics.webhook_terra(body text, signature text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  secret text;
  parsed jsonb;
  inserted integer;
  keys jsonb;
begin
  select w.secret into secret from health_metrics.webhook_secrets w where w.provider = 'terra';
  if secret is null then
    raise exception 'no secret for provider terra' using errcode = 'P0001',
      hint = 'insert into health_metrics.webhook_secrets (provider, secret) values (''terra'', ''<shared secret>'');';
  end if;
  if signature is null
     or health_metrics.hmac_sha256(pg_catalog.convert_to(secret, 'UTF8'), pg_catalog.convert_to(body, 'UTF8'))
        <> pg_catalog.lower(signature) then
    raise exception 'webhook-terra: the signature does not match the body' using errcode = '22023',
      hint = 'The signature is the hex HMAC-SHA256 of the exact body under the provider''s secret.';
  end if;
  parsed := body::jsonb;
  inserted := health_metrics.ingest_webhook('terra', parsed);
  select pg_catalog.jsonb_agg(distinct pg_catalog.jsonb_build_object('user_id', (parsed ->> 'user_id')::bigint, 'metric', s ->> 'metric'))
    into keys
    from pg_catalog.jsonb_array_elements(parsed -> 'samples') as s
   where s ->> 'metric' in (select m.metric from health_metrics.metrics m);
  if inserted > 0 and keys is not null then
    perform graphile_worker.add_job('recalculate',
      pg_catalog.json_build_object('name', 'metric_confidence', 'keys', keys));
  end if;
  return inserted;
end
$$;
comment on function health_metrics.webhook_terra(text, text) is
  'The webhook-terra path: checks the HMAC-SHA256 signature of the body (22023 when it does not match, and nothing is stored), stores its samples through ingest_webhook (tracking enqueues their invalidations), and enqueues a metric_confidence recalculation of the keys it touched. Returns how many samples were new.';

-- Unqualified names: health_metrics joins the database's search_path (new sessions). Needs the
-- database's owner; otherwise a notice says what to run.
do $$
declare
  current_setting text;
begin
  select pg_catalog.substring(c, '^search_path=(.*)$') into current_setting
    from pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) as c
   where s.setdatabase = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
     and s.setrole = 0 and c like 'search_path=%';
  if current_setting is null then
    current_setting := '"$user", public';
  end if;
  if current_setting !~ '(^|[ ,])health_metrics($|[ ,])' then
    begin
      execute pg_catalog.format('alter database %I set search_path = %s', pg_catalog.current_database(),
                                current_setting || ', health_metrics');
    exception when insufficient_privilege then
      raise notice 'the checklist''s unqualified names need health_metrics on the search_path: alter database % set search_path = %, health_metrics',
        pg_catalog.current_database(), current_setting;
    end;
  end if;
end
$$;

create or replace function health_metrics.remove()
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  running bigint;
  setting text;
begin
  -- What install registered with steward (each only when its capability is installed), then
  -- the schema. A run in progress is cancelled: its batches would call functions about to go.
  if pg_catalog.to_regclass('steward.recalculations') is not null then
    for running in select r.id from steward.recalc_runs r
                    where r.name = 'metric_confidence' and r.finished_at is null loop
      perform steward.cancel_recalculation(running);
    end loop;
    if exists (select from steward.recalculations r where r.name = 'metric_confidence') then
      perform steward.unregister_recalculation('metric_confidence');
    end if;
    delete from steward.recalc_runs r where r.name = 'metric_confidence';
  end if;
  if pg_catalog.to_regclass('steward.materialized_views') is not null
     and pg_catalog.to_regclass('health_metrics.latest_unified_metrics') is not null
     and exists (select from steward.materialized_views v where v.view = 'health_metrics.latest_unified_metrics'::regclass::text) then
    perform steward.unregister_materialized_view('health_metrics.latest_unified_metrics'::regclass);
  end if;
  if pg_catalog.to_regclass('health_metrics.samples') is not null
     and exists (select from steward.tracked_tables t where t.target = 'health_metrics.samples'::regclass) then
    perform steward.untrack_table('health_metrics.samples'::regclass);
  end if;
  delete from steward.invalidations i
   where i.tag like 'health:%' or i.tag = 'mv:health_metrics.latest_unified_metrics';
  drop schema health_metrics cascade;
  -- Out of the database's search_path again (install put it at the end).
  select pg_catalog.substring(c, '^search_path=(.*)$') into setting
    from pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) as c
   where s.setdatabase = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
     and s.setrole = 0 and c like 'search_path=%';
  if setting is not null and setting ~ ', health_metrics$' then
    setting := pg_catalog.regexp_replace(setting, ', health_metrics$', '');
    if setting = '"$user", public' then
      execute pg_catalog.format('alter database %I reset search_path', pg_catalog.current_database());
    else
      execute pg_catalog.format('alter database %I set search_path = %s', pg_catalog.current_database(), setting);
    end if;
  end if;
end
$$;
comment on function health_metrics.remove() is
  'Removes the example: cancels and unregisters its recalculation (with its runs), unregisters its view, untracks samples, drops its pending invalidations, then schema health_metrics. Run by `steward example remove health-metrics`.';

-- What steward does with it --------------------------------------------------------------------

do $$
declare
  wanted text[] := array['health:user:{user_id}'];
  view_registry regprocedure := pg_catalog.to_regprocedure('steward.register_materialized_view(regclass,interval,boolean,interval)');
  wanted_keys_sql text := 'select pg_catalog.jsonb_build_object(''user_id'', s.user_id, ''metric'', s.metric) as key '
                   'from (select distinct user_id, metric from health_metrics.samples) as s';
begin
  -- The view is refreshed by steward's materialized-view registry when it is installed (each
  -- write enqueues mv:health_metrics.latest_unified_metrics); until then writes enqueue the
  -- per-user cache tag only.
  if view_registry is not null then
    wanted := wanted || 'mv:health_metrics.latest_unified_metrics'::text;
    perform steward.register_materialized_view('health_metrics.latest_unified_metrics'::regclass,
      refresh_every => '10 minutes', concurrently => true, debounce => '30 seconds');
  end if;
  -- Registering the view again each start (one audit row) re-asserts it; the calls below are
  -- made only when something changes.
  if not exists (select from steward.tracked_tables t
                  where t.target = 'health_metrics.samples'::regclass and t.tags = wanted) then
    perform steward.track_table('health_metrics.samples'::regclass, wanted);
  end if;
  if not exists (select from steward.recalculations r
                  where r.name = 'metric_confidence' and r.keys_sql = wanted_keys_sql
                    and r.compute = 'health_metrics.recalculate_confidence(jsonb)'::regprocedure and r.batch_size = 500) then
    perform steward.register_recalculation('metric_confidence', wanted_keys_sql,
      'health_metrics.recalculate_confidence(jsonb)'::regprocedure, 500);
  end if;
  -- Populated on first install; after that steward refreshes it.
  if not (select c.relispopulated from pg_catalog.pg_class c where c.oid = 'health_metrics.latest_unified_metrics'::regclass) then
    refresh materialized view health_metrics.latest_unified_metrics;
  end if;
end
$$;
