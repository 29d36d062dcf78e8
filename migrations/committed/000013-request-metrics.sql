--! Previous: sha1:1165706cd83790b43d93a263e4f7e57f5479ccee
--! Hash: sha1:8d4773e5b35e4787b49e0c021c89798629ef418b
--! Message: request metrics

-- Request metrics: raw rows recorded by clients (steward.record_requests) into daily
-- partitions, rolled up by the rollup_requests task into 5-minute and hourly stats.

-- Request metrics: settings --------------------------------------------------------------------

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('request_metrics.raw_retention', '7 days', 'interval', '1 day', '3650 days',
   'How long raw request rows (steward.requests) are kept. They are dropped a whole UTC day at a time once the day is older than this; record_requests refuses rows older than this.'),
  ('request_metrics.retention_5m', '30 days', 'interval', '1 hour', '3650 days',
   'How long rows of steward.request_stats_5m are kept.'),
  ('request_metrics.retention_hourly', '400 days', 'interval', '1 day', '3650 days',
   'How long rows of steward.request_stats_hourly are kept.'),
  ('request_metrics.hourly_refresh', '5 minutes', 'interval', '0 seconds', '1 hour',
   'How stale the hourly stats of an hour still in progress may get: such an hour is recomputed at most this often (a closed hour is recomputed on the next rollup after any change).'),
  ('request_metrics.max_clock_skew', '5 minutes', 'interval', '0 seconds', '1 day',
   'How far in the future a recorded request''s at may be; record_requests refuses rows later than that.'),
  ('request_metrics.partitions_ahead', '3', 'integer', '1', '90',
   'Daily partitions of steward.requests that the rollup keeps created ahead of today (UTC).')
on conflict (name) do nothing;

-- Request metrics: tables ----------------------------------------------------------------------

-- Partitioned by UTC day, so that expiring a day is a DROP TABLE rather than a DELETE.
create table steward.requests (
  at          timestamptz not null,
  endpoint    text not null,
  method      text not null,
  status      smallint not null,
  duration_ms double precision not null,
  cache_hit   boolean not null,
  request_id  text
) partition by range (at);
create index requests_at_idx on steward.requests (at);
comment on table steward.requests is
  'Raw request timings recorded by steward.record_requests, one partition per UTC day (requests_YYYYMMDD), kept for request_metrics.raw_retention and dropped a day at a time by cleanup. Rolled up into request_stats_5m and request_stats_hourly.';
comment on column steward.requests.request_id is 'The caller''s request id, kept for tracing; not deduplicated.';

create table steward.request_stats_5m (
  bucket     timestamptz not null,
  endpoint   text not null,
  method     text not null,
  requests   bigint not null,
  errors     bigint not null,
  p50_ms     double precision not null,
  p95_ms     double precision not null,
  p99_ms     double precision not null,
  cache_hits bigint not null,
  rate_limited bigint not null default 0,
  primary key (bucket, endpoint, method)
);
comment on table steward.request_stats_5m is
  'Requests per 5-minute bucket (UTC, start of the bucket), endpoint and method: count, errors (status >= 500), exact percentiles of duration_ms (percentile_cont), cache hits and rate-limited requests (status 429). Recomputed from the raw rows by the rollup_requests task whenever a bucket gets new rows.';
comment on column steward.request_stats_5m.rate_limited is 'Requests answered 429 (Too Many Requests): a rate limit refused them.';

create table steward.request_stats_hourly (like steward.request_stats_5m including all);
comment on table steward.request_stats_hourly is
  'Requests per hour (UTC, start of the hour), endpoint and method, computed like request_stats_5m from the raw rows (percentiles cannot be combined from 5-minute ones). An hour in progress is refreshed at most every request_metrics.hourly_refresh; a closed hour on the next rollup after a change.';

-- Percentiles of all endpoints together cannot be derived from the per-endpoint ones: the
-- service's overall p95 on /metrics comes from here.
create table steward.request_stats_5m_overall (
  bucket       timestamptz primary key,
  requests     bigint not null,
  errors       bigint not null,
  p50_ms       double precision not null,
  p95_ms       double precision not null,
  p99_ms       double precision not null,
  cache_hits   bigint not null,
  rate_limited bigint not null
);
comment on table steward.request_stats_5m_overall is
  'Requests per 5-minute bucket over every endpoint and method together, computed like request_stats_5m from the raw rows (so the percentiles are exact for the whole service). Recomputed by the rollup whenever any endpoint of the bucket gets new rows; kept for request_metrics.retention_5m.';

-- Buckets with rows the rollup has not seen yet. record_requests appends one row per distinct
-- (bucket, endpoint, method) of each call (no unique index, so concurrent callers never wait on
-- each other); the rollup deletes what it takes. A row added by a transaction that commits
-- later is simply not taken yet, so no change is ever missed, and recomputing a bucket twice
-- gives the same row.
create table steward.request_rollup_pending (
  bucket   timestamptz not null,
  endpoint text not null,
  method   text not null
);
create index request_rollup_pending_bucket_idx on steward.request_rollup_pending (bucket);
comment on table steward.request_rollup_pending is
  '5-minute buckets with request rows not yet rolled up (duplicates allowed); filled by record_requests, emptied by rollup_requests.';

create table steward.request_rollup_dirty_hours (
  bucket      timestamptz not null,
  endpoint    text not null,
  method      text not null,
  dirty_since timestamptz not null default pg_catalog.now(),
  primary key (bucket, endpoint, method)
);
comment on table steward.request_rollup_dirty_hours is
  'Hours whose hourly stats are out of date, and since when; the rollup recomputes an hour once it has closed or has been out of date for request_metrics.hourly_refresh.';

-- Request metrics: functions -------------------------------------------------------------------

create function steward.create_request_partitions(first_day date, last_day date)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  day date;
  name text;
  created integer := 0;
begin
  if first_day is null or last_day is null or last_day < first_day or last_day - first_day > 3660 then
    raise exception 'create_request_partitions: need first_day <= last_day, at most ten years apart; got % and %', first_day, last_day
      using errcode = '22023';
  end if;
  for day in select d::date from pg_catalog.generate_series(first_day, last_day, interval '1 day') as d loop
    name := 'requests_' || pg_catalog.to_char(day, 'YYYYMMDD');
    if pg_catalog.to_regclass(pg_catalog.format('steward.%I', name)) is null then
      -- Two sessions creating the same day at once would collide in the catalog; the second
      -- waits here, then finds the table made (if not exists).
      perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('steward.create_request_partitions'));
      execute pg_catalog.format('create table if not exists steward.%I partition of steward.requests for values from (%L) to (%L)',
        name, pg_catalog.to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00', pg_catalog.to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
      execute pg_catalog.format('comment on table steward.%I is %L', name,
        pg_catalog.format('Raw request rows of %s (UTC), a partition of steward.requests; dropped by cleanup after request_metrics.raw_retention.',
                          pg_catalog.to_char(day, 'YYYY-MM-DD')));
      created := created + 1;
    end if;
  end loop;
  return created;
end
$$;
comment on function steward.create_request_partitions(date, date) is
  'Creates the missing daily partitions of steward.requests for the UTC days first_day to last_day; returns how many it created. The rollup keeps today and request_metrics.partitions_ahead days ahead; record_requests creates a missing day it needs.';

create function steward.record_requests(rows jsonb)
returns integer
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  total integer;
  retention interval := steward.setting_interval('request_metrics.raw_retention');
  skew interval := steward.setting_interval('request_metrics.max_clock_skew');
  problem record;
  day date;
begin
  if pg_catalog.jsonb_typeof(rows) is distinct from 'array' then
    raise exception 'record_requests: rows must be a JSON array of objects, got %', coalesce(pg_catalog.jsonb_typeof(rows), 'null')
      using errcode = '22023',
            hint = 'For example [{"at": "2024-05-01T12:00:00Z", "endpoint": "/users/:id", "method": "GET", "status": 200, "duration_ms": 12.5, "cache_hit": false, "request_id": "abc"}].';
  end if;
  total := pg_catalog.jsonb_array_length(rows);
  if total = 0 then
    return 0;
  end if;
  if total > 10000 then
    raise exception 'record_requests: at most 10000 rows per call, got %', total
      using errcode = '22023', hint = 'Send the rows in batches of at most 10000.';
  end if;

  -- The first bad field of the first bad row, checked in order; nothing is written if any.
  -- Casts come only after the checks that make them safe (CASE evaluates its branches in order).
  select e.position - 1 as position, c.failure[1] as field, c.failure[2] as expected,
         pg_catalog.left(coalesce((case when c.failure[1] = '' then e.value else e.value -> c.failure[1] end)::text, 'nothing'), 80) as got
    into problem
    from pg_catalog.jsonb_array_elements(rows) with ordinality as e(value, position)
    cross join lateral (
      select case
        when pg_catalog.jsonb_typeof(e.value) <> 'object' then array['', 'must be a JSON object']
        when e.value - array['at', 'endpoint', 'method', 'status', 'duration_ms', 'cache_hit', 'request_id'] <> '{}'::jsonb then
          array[(select pg_catalog.min(k) from pg_catalog.jsonb_object_keys(e.value - array['at', 'endpoint', 'method', 'status', 'duration_ms', 'cache_hit', 'request_id']) as k),
                'is not a field (the fields are at, endpoint, method, status, duration_ms, cache_hit, request_id)']
        when pg_catalog.jsonb_typeof(e.value -> 'endpoint') is distinct from 'string' or pg_catalog.length(e.value ->> 'endpoint') not between 1 and 300 then
          array['endpoint', 'must be a string of 1 to 300 characters (a route such as "/users/:id", not a raw path)']
        when pg_catalog.jsonb_typeof(e.value -> 'method') is distinct from 'string' or (e.value ->> 'method') !~ '^[A-Za-z]{1,16}$' then
          array['method', 'must be an HTTP method such as "GET"']
        when pg_catalog.jsonb_typeof(e.value -> 'status') is distinct from 'number' then
          array['status', 'must be an integer from 100 to 599']
        when (e.value ->> 'status')::numeric not between 100 and 599 or (e.value ->> 'status')::numeric % 1 <> 0 then
          array['status', 'must be an integer from 100 to 599']
        when pg_catalog.jsonb_typeof(e.value -> 'duration_ms') is distinct from 'number' then
          array['duration_ms', 'must be a number of milliseconds, 0 or more']
        when (e.value ->> 'duration_ms')::numeric < 0 then
          array['duration_ms', 'must be a number of milliseconds, 0 or more']
        when coalesce(pg_catalog.jsonb_typeof(e.value -> 'cache_hit'), 'null') not in ('boolean', 'null') then
          array['cache_hit', 'must be true, false or absent']
        when coalesce(pg_catalog.jsonb_typeof(e.value -> 'request_id'), 'null') not in ('string', 'null') or pg_catalog.length(e.value ->> 'request_id') > 200 then
          array['request_id', 'must be a string of at most 200 characters, or absent']
        when coalesce(pg_catalog.jsonb_typeof(e.value -> 'at'), 'null') not in ('string', 'null') then
          array['at', 'must be an ISO 8601 timestamp with a time zone, such as "2024-05-01T12:00:00.250Z", or absent for now']
        when (e.value ->> 'at') !~ '^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|z|[+-]\d{2}(:?\d{2})?)$' then
          array['at', 'must be an ISO 8601 timestamp with a time zone, such as "2024-05-01T12:00:00.250Z", or absent for now']
        when (e.value ->> 'at')::timestamptz < pg_catalog.now() - retention then
          array['at', pg_catalog.format('must be within request_metrics.raw_retention (%s) of now', retention)]
        when (e.value ->> 'at')::timestamptz > pg_catalog.now() + skew then
          array['at', pg_catalog.format('must not be later than now plus request_metrics.max_clock_skew (%s)', skew)]
        end as failure
    ) as c
   where c.failure is not null
   order by e.position
   limit 1;
  if found then
    raise exception 'record_requests: rows[%]% %, got %', problem.position,
        case when problem.field = '' then '' else '.' || problem.field end, problem.expected, problem.got
      using errcode = '22023';
  end if;

  -- Rows are accepted within the retention period, so their day exists unless it was never
  -- created (the rollup keeps only today and the days ahead).
  for day in
    select distinct (coalesce((e.value ->> 'at')::timestamptz, pg_catalog.now()) at time zone 'UTC')::date
      from pg_catalog.jsonb_array_elements(rows) as e(value)
  loop
    if pg_catalog.to_regclass(pg_catalog.format('steward.%I', 'requests_' || pg_catalog.to_char(day, 'YYYYMMDD'))) is null then
      perform steward.create_request_partitions(day, day);
    end if;
  end loop;

  with recorded as (
    insert into steward.requests (at, endpoint, method, status, duration_ms, cache_hit, request_id)
    select coalesce((e.value ->> 'at')::timestamptz, pg_catalog.now()), e.value ->> 'endpoint', pg_catalog.upper(e.value ->> 'method'),
           (e.value ->> 'status')::smallint, (e.value ->> 'duration_ms')::double precision,
           coalesce((e.value ->> 'cache_hit')::boolean, false), e.value ->> 'request_id'
      from pg_catalog.jsonb_array_elements(rows) as e(value)
    returning at, endpoint, method
  )
  insert into steward.request_rollup_pending (bucket, endpoint, method)
  select distinct pg_catalog.date_bin('5 minutes', r.at, timestamptz '2000-01-01 00:00:00+00'), r.endpoint, r.method
    from recorded as r;
  return total;
end
$$;
comment on function steward.record_requests(jsonb) is
  'Records a batch (at most 10000) of request timings: [{at, endpoint, method, status, duration_ms, cache_hit, request_id}]. at (ISO 8601 with a time zone) defaults to now, cache_hit to false, request_id to null; method is stored upper-case. A bad row is an error naming the row and the field, and nothing is written. Returns how many rows it recorded.';

create function steward.request_stats_of(width interval, buckets timestamptz[], endpoints text[], methods text[])
returns table (bucket timestamptz, endpoint text, method text, requests bigint, errors bigint,
               p50_ms double precision, p95_ms double precision, p99_ms double precision, cache_hits bigint,
               rate_limited bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- Each bucket's time range is read once, for all of its endpoints and methods; percentiles
  -- are exact (percentile_cont over every duration of the bucket).
  select a.bucket, a.endpoint, a.method, a.requests, a.errors, a.p[1], a.p[2], a.p[3], a.cache_hits, a.rate_limited
    from (select b.bucket, r.endpoint, r.method,
                 pg_catalog.count(*) as requests,
                 pg_catalog.count(*) filter (where r.status >= 500) as errors,
                 pg_catalog.percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.duration_ms) as p,
                 pg_catalog.count(*) filter (where r.cache_hit) as cache_hits,
                 pg_catalog.count(*) filter (where r.status = 429) as rate_limited
            from (select distinct k from pg_catalog.unnest(buckets) as k) as b(bucket)
            join steward.requests r on r.at >= b.bucket and r.at < b.bucket + width
           where (b.bucket, r.endpoint, r.method) in (select * from unnest(buckets, endpoints, methods))
           group by b.bucket, r.endpoint, r.method) as a
$$;
comment on function steward.request_stats_of(interval, timestamptz[], text[], text[]) is
  'The stats (requests, errors, exact p50/p95/p99 of duration_ms, cache hits, 429s) of the given buckets of the given width, from the raw rows of steward.requests; the three arrays list (bucket start, endpoint, method). Used by rollup_requests.';

create function steward.rollup_requests(max_buckets integer default 5000)
returns table (buckets_5m integer, buckets_hourly integer, more boolean)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  refresh interval := steward.setting_interval('request_metrics.hourly_refresh');
  today date := (pg_catalog.now() at time zone 'UTC')::date;
  origin constant timestamptz := timestamptz '2000-01-01 00:00:00+00';
  keys_bucket timestamptz[];
  keys_endpoint text[];
  keys_method text[];
  hours_bucket timestamptz[];
  hours_endpoint text[];
  hours_method text[];
begin
  if max_buckets is null or max_buckets < 1 or max_buckets > 1000000 then
    raise exception 'rollup_requests: max_buckets must be from 1 to 1000000, got %', coalesce(max_buckets::text, 'null')
      using errcode = '22023';
  end if;
  -- One rollup at a time; a second one has nothing to add, so it returns at once.
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('steward.rollup_requests')) then
    return query select 0, 0, false;
    return;
  end if;
  perform steward.create_request_partitions(today, today + steward.setting_integer('request_metrics.partitions_ahead'));

  -- Take up to max_buckets 5-minute buckets off the pending list, oldest first.
  with picked as (
    select distinct p.bucket, p.endpoint, p.method
      from steward.request_rollup_pending p
     order by p.bucket
     limit max_buckets
  ), taken as (
    delete from steward.request_rollup_pending p
     using picked k
     where p.bucket = k.bucket and p.endpoint = k.endpoint and p.method = k.method
    returning p.bucket, p.endpoint, p.method
  )
  select pg_catalog.array_agg(t.bucket), pg_catalog.array_agg(t.endpoint), pg_catalog.array_agg(t.method)
    into keys_bucket, keys_endpoint, keys_method
    from (select distinct taken.bucket, taken.endpoint, taken.method from taken) as t;

  -- Recompute each taken bucket in full from the raw rows (idempotent: the same rows give the
  -- same stats).
  if keys_bucket is not null then
    insert into steward.request_stats_5m
    select * from steward.request_stats_of(interval '5 minutes', keys_bucket, keys_endpoint, keys_method)
    on conflict (bucket, endpoint, method) do update
       set requests = excluded.requests, errors = excluded.errors, p50_ms = excluded.p50_ms,
           p95_ms = excluded.p95_ms, p99_ms = excluded.p99_ms, cache_hits = excluded.cache_hits,
           rate_limited = excluded.rate_limited;

    -- The whole service's stats of each bucket touched, over all its endpoints.
    insert into steward.request_stats_5m_overall
    select a.bucket, a.requests, a.errors, a.p[1], a.p[2], a.p[3], a.cache_hits, a.rate_limited
      from (select b.bucket,
                   pg_catalog.count(*) as requests,
                   pg_catalog.count(*) filter (where r.status >= 500) as errors,
                   pg_catalog.percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.duration_ms) as p,
                   pg_catalog.count(*) filter (where r.cache_hit) as cache_hits,
                   pg_catalog.count(*) filter (where r.status = 429) as rate_limited
              from (select distinct k from pg_catalog.unnest(keys_bucket) as k) as b(bucket)
              join steward.requests r on r.at >= b.bucket and r.at < b.bucket + interval '5 minutes'
             group by b.bucket) as a
    on conflict (bucket) do update
       set requests = excluded.requests, errors = excluded.errors, p50_ms = excluded.p50_ms,
           p95_ms = excluded.p95_ms, p99_ms = excluded.p99_ms, cache_hits = excluded.cache_hits,
           rate_limited = excluded.rate_limited;

    insert into steward.request_rollup_dirty_hours (bucket, endpoint, method)
    select distinct pg_catalog.date_bin('1 hour', k.bucket, origin), k.endpoint, k.method
      from unnest(keys_bucket, keys_endpoint, keys_method) as k(bucket, endpoint, method)
    on conflict (bucket, endpoint, method) do nothing;
  end if;

  -- Hours due: closed ones at once, the hour in progress at most every hourly_refresh.
  with due as (
    select d.bucket, d.endpoint, d.method
      from steward.request_rollup_dirty_hours d
     where d.bucket + interval '1 hour' <= pg_catalog.now() or d.dirty_since <= pg_catalog.now() - refresh
     order by d.bucket
     limit max_buckets
  ), taken as (
    delete from steward.request_rollup_dirty_hours d
     using due
     where d.bucket = due.bucket and d.endpoint = due.endpoint and d.method = due.method
    returning d.bucket, d.endpoint, d.method
  )
  select pg_catalog.array_agg(taken.bucket), pg_catalog.array_agg(taken.endpoint), pg_catalog.array_agg(taken.method)
    into hours_bucket, hours_endpoint, hours_method
    from taken;

  if hours_bucket is not null then
    insert into steward.request_stats_hourly
    select * from steward.request_stats_of(interval '1 hour', hours_bucket, hours_endpoint, hours_method)
    on conflict (bucket, endpoint, method) do update
       set requests = excluded.requests, errors = excluded.errors, p50_ms = excluded.p50_ms,
           p95_ms = excluded.p95_ms, p99_ms = excluded.p99_ms, cache_hits = excluded.cache_hits,
           rate_limited = excluded.rate_limited;
  end if;

  -- More only when a step was full: rows that keep arriving during the run are the next
  -- run's work, or a busy database would keep the task looping.
  return query select coalesce(pg_catalog.cardinality(keys_bucket), 0),
                      coalesce(pg_catalog.cardinality(hours_bucket), 0),
                      coalesce(pg_catalog.cardinality(keys_bucket), 0) >= max_buckets
                      or coalesce(pg_catalog.cardinality(hours_bucket), 0) >= max_buckets;
end
$$;
comment on function steward.rollup_requests(integer) is
  'One step of the request rollup (the rollup_requests task calls it until more is false): recomputes from the raw rows up to max_buckets 5-minute buckets that got new rows, then the hourly stats of the hours due; returns how many of each it wrote and whether work remains. Idempotent; a second call running at the same time returns (0, 0, false) at once.';

create function steward.requeue_request_rollup(since timestamptz, until timestamptz default pg_catalog.now())
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  queued bigint;
begin
  if since is null or until is null or until < since then
    raise exception 'requeue_request_rollup: need since <= until, got % and %', since, until using errcode = '22023';
  end if;
  insert into steward.request_rollup_pending (bucket, endpoint, method)
  select distinct pg_catalog.date_bin('5 minutes', r.at, timestamptz '2000-01-01 00:00:00+00'), r.endpoint, r.method
    from steward.requests r
   where r.at >= since and r.at < until;
  get diagnostics queued = row_count;
  perform steward.audit('requeue_request_rollup', 'steward.requests',
    pg_catalog.jsonb_build_object('since', since, 'until', until, 'buckets', queued));
  return queued;
end
$$;
comment on function steward.requeue_request_rollup(timestamptz, timestamptz) is
  'Marks every 5-minute bucket with raw rows between since and until for recomputation by the next rollup (after raw rows were changed by hand); audited. Returns how many buckets it queued.';

-- Cleanup --------------------------------------------------------------------------------------

create function steward.cleanup_requests(batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
-- Dropping a partition locks steward.requests briefly; rather skip a day than queue behind a
-- long query and block every record_requests behind us.
set lock_timeout = '2s'
as $$
declare
  horizon timestamptz := pg_catalog.now() - steward.setting_interval('request_metrics.raw_retention');
  partition record;
  dropped bigint := 0;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'cleanup_requests: batch_size must be 1 or more, got %', coalesce(batch_size::text, 'null') using errcode = '22023';
  end if;
  for partition in
    select c.relname,
           pg_catalog.to_date(pg_catalog.substr(c.relname, 10), 'YYYYMMDD') as day,
           greatest(c.reltuples, 0)::bigint as estimated_rows
      from pg_catalog.pg_inherits i
      join pg_catalog.pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'steward.requests'::regclass and c.relname ~ '^requests_[0-9]{8}$'
     order by c.relname
  loop
    exit when (partition.day + 1)::timestamp at time zone 'UTC' > horizon;
    -- A day still waiting for the rollup (the worker was down) is kept until it is rolled up.
    continue when exists (select from steward.request_rollup_pending p
                           where p.bucket >= partition.day::timestamp at time zone 'UTC'
                             and p.bucket < (partition.day + 1)::timestamp at time zone 'UTC')
               or exists (select from steward.request_rollup_dirty_hours d
                           where d.bucket >= partition.day::timestamp at time zone 'UTC'
                             and d.bucket < (partition.day + 1)::timestamp at time zone 'UTC');
    begin
      execute pg_catalog.format('drop table steward.%I', partition.relname);
      dropped := dropped + partition.estimated_rows;
    exception when lock_not_available then
      raise notice 'cleanup_requests: steward.% is busy; it will be dropped next time', partition.relname;
    end;
  end loop;
  return dropped;
end
$$;
comment on function steward.cleanup_requests(integer) is
  'Cleanup step: drops the daily partitions of steward.requests that lie wholly before now minus request_metrics.raw_retention and are rolled up, whatever their size (a DROP costs the same for any row count, so batch_size does not bound it); returns the rows they held, as estimated by the planner statistics.';

create function steward.cleanup_request_stats(batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  deleted bigint;
begin
  deleted := steward.delete_older_than('steward.request_stats_5m', 'bucket',
    pg_catalog.now() - steward.setting_interval('request_metrics.retention_5m'), batch_size);
  if deleted < batch_size then
    deleted := deleted + steward.delete_older_than('steward.request_stats_5m_overall', 'bucket',
      pg_catalog.now() - steward.setting_interval('request_metrics.retention_5m'), (batch_size - deleted)::integer);
  end if;
  if deleted < batch_size then
    deleted := deleted + steward.delete_older_than('steward.request_stats_hourly', 'bucket',
      pg_catalog.now() - steward.setting_interval('request_metrics.retention_hourly'), (batch_size - deleted)::integer);
  end if;
  return deleted;
end
$$;
comment on function steward.cleanup_request_stats(integer) is
  'Cleanup step: deletes at most batch_size rows of request_stats_5m, request_stats_5m_overall and request_stats_hourly older than their retention settings; returns how many.';

insert into steward.cleanup_steps (name, function, description) values
  ('requests', 'steward.cleanup_requests(integer)',
   'Drops daily partitions of steward.requests older than request_metrics.raw_retention (once rolled up).'),
  ('request_stats', 'steward.cleanup_request_stats(integer)',
   'Deletes request_stats_5m, request_stats_5m_overall and request_stats_hourly rows older than request_metrics.retention_5m and retention_hourly.')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Metrics ----------------------------------------------------------------------------------------

-- On-call reads requests, errors, 429s and latency from the last complete 5-minute bucket as
-- gauges (not counters): the rollup recomputes buckets and retention deletes them, so a sum over
-- the stats tables is not monotonic, while one closed bucket is exact and every alert on it is a
-- plain ratio or comparison (deploy/alerts.yml).
create function steward.request_metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with last_bucket as (
    -- The rollup runs every minute: a bucket that ended at least a minute ago is rolled up.
    select pg_catalog.date_bin('5 minutes', pg_catalog.now() - interval '1 minute', timestamptz '2000-01-01 00:00:00+00')
           - interval '5 minutes' as bucket
  ), cap as (
    select greatest(steward.setting_integer('metrics.max_label_values'), 2) as label_values
  ), ranked as (
    select s.endpoint, s.method, s.requests, s.errors, s.rate_limited, s.p50_ms, s.p95_ms, s.p99_ms,
           pg_catalog.dense_rank() over (order by e.endpoint_requests desc, s.endpoint) as rank
      from steward.request_stats_5m s
      join last_bucket l on s.bucket = l.bucket
      join (select t.endpoint, pg_catalog.sum(t.requests) as endpoint_requests
              from steward.request_stats_5m t join last_bucket l on t.bucket = l.bucket
             group by t.endpoint) as e on e.endpoint = s.endpoint
  ), per_endpoint as (
    -- The busiest endpoints by name, the rest as _other: its counts are sums and its
    -- percentiles the largest of its endpoints' (an upper bound of the percentile of all of
    -- them together, so an alert on it never misses).
    select case when r.rank < c.label_values or (select pg_catalog.max(x.rank) from ranked x) <= c.label_values
                then r.endpoint else '_other' end as endpoint,
           r.method,
           pg_catalog.sum(r.requests)::float8 as requests, pg_catalog.sum(r.errors)::float8 as errors,
           pg_catalog.sum(r.rate_limited)::float8 as rate_limited,
           pg_catalog.max(r.p50_ms) / 1000 as p50, pg_catalog.max(r.p95_ms) / 1000 as p95, pg_catalog.max(r.p99_ms) / 1000 as p99
      from ranked r cross join cap c
     group by 1, 2
  )
  select 'steward_requests_5m', 'gauge',
         'Requests recorded (record_requests) in the last complete 5-minute bucket, by endpoint and method; divide by 300 for a rate.',
         pg_catalog.jsonb_build_object('endpoint', p.endpoint, 'method', p.method), p.requests
    from per_endpoint p
  union all
  select 'steward_requests_5m_errors', 'gauge',
         'Requests answered with status 500 or more in the last complete 5-minute bucket, by endpoint and method.',
         pg_catalog.jsonb_build_object('endpoint', p.endpoint, 'method', p.method), p.errors
    from per_endpoint p
  union all
  select 'steward_requests_5m_rate_limited', 'gauge',
         'Requests answered 429 (rate limited) in the last complete 5-minute bucket, by endpoint and method.',
         pg_catalog.jsonb_build_object('endpoint', p.endpoint, 'method', p.method), p.rate_limited
    from per_endpoint p
  union all
  select 'steward_requests_5m_duration_seconds', 'gauge',
         'Exact percentiles (quantile 0.5, 0.95, 0.99) of request durations in the last complete 5-minute bucket, by endpoint and method (for endpoint _other, the largest of its endpoints'').',
         pg_catalog.jsonb_build_object('endpoint', p.endpoint, 'method', p.method, 'quantile', q.quantile), q.seconds
    from per_endpoint p
   cross join lateral (values ('0.5', p.p50), ('0.95', p.p95), ('0.99', p.p99)) as q(quantile, seconds)
  union all
  select 'steward_requests_5m_overall_duration_seconds', 'gauge',
         'Exact percentiles (quantile 0.5, 0.95, 0.99) of the durations of all requests together in the last complete 5-minute bucket.',
         pg_catalog.jsonb_build_object('quantile', q.quantile), q.ms / 1000
    from steward.request_stats_5m_overall o
    join last_bucket l on o.bucket = l.bucket
   cross join lateral (values ('0.5', o.p50_ms), ('0.95', o.p95_ms), ('0.99', o.p99_ms)) as q(quantile, ms)
  union all
  select 'steward_requests_5m_start_timestamp_seconds', 'gauge',
         'Start (Unix time) of the 5-minute bucket the steward_requests_5m* series describe: the last one that ended at least a minute ago.',
         '{}'::jsonb, extract(epoch from l.bucket)::float8
    from last_bucket l
  union all
  select 'steward_request_rollup_pending', 'gauge',
         '5-minute request buckets (bucket, endpoint, method) with rows the rollup_requests task has not rolled up yet.',
         '{}'::jsonb, pg_catalog.count(*)::float8
    from (select distinct p.bucket, p.endpoint, p.method from steward.request_rollup_pending p) as pending
$$;
comment on function steward.request_metrics() is
  'Metric source of request metrics: from the last complete 5-minute bucket (ended at least a minute ago), steward_requests_5m, _errors, _rate_limited and _duration_seconds{quantile} by endpoint and method (at most metrics.max_label_values endpoints, the rest as _other), steward_requests_5m_overall_duration_seconds{quantile} over all endpoints, steward_requests_5m_start_timestamp_seconds; and steward_request_rollup_pending.';

insert into steward.metric_sources (name, function, description) values
  ('request_metrics', 'steward.request_metrics()', 'requests, errors, 429s and latency of the last complete 5-minute bucket; the rollup backlog')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Today and the days ahead exist from the start; the rollup keeps them ahead.
select steward.create_request_partitions((pg_catalog.now() at time zone 'UTC')::date,
                                         (pg_catalog.now() at time zone 'UTC')::date + steward.setting_integer('request_metrics.partitions_ahead'));

-- Privileges -----------------------------------------------------------------------------------

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function steward.record_requests(jsonb) to steward_client;
