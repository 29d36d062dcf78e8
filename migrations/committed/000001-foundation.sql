--! Previous: -
--! Hash: sha1:d9829f20119019ca320fc2fbef6b707ecdd64b63
--! Message: foundation

-- Foundation: the `steward` schema, the `steward_client` role, the privilege rules every later
-- migration relies on, the settings table and the audit log.
-- Runs as the database owner; no superuser and no extension needed.

create schema if not exists steward;
comment on schema steward is
  'pg-steward: rate limits, circuit breakers, invalidation queue, dead letters, maintenance registries. Tables are private; clients call the functions granted to steward_client.';

-- The role application roles are granted (`grant steward_client to authenticated`). Roles are
-- cluster-wide, so another database of the cluster may have created it already.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'steward_client') then
    create role steward_client nologin;
    comment on role steward_client is
      'pg-steward clients: may execute the client functions of schema steward and nothing else.';
  end if;
exception when insufficient_privilege then
  raise exception 'role steward_client does not exist and % may not create roles', current_user
    using errcode = '42501',
          hint = 'Ask an administrator to run: create role steward_client nologin; then migrate again.';
end
$$;

-- Nothing in schema steward is reachable by PUBLIC. Functions are executable by PUBLIC by
-- default in PostgreSQL, so the default is turned off for every function this role creates
-- here, and each migration still revokes explicitly at its end.
revoke all on schema steward from public;
grant usage on schema steward to steward_client;
alter default privileges in schema steward revoke execute on functions from public;
alter default privileges in schema steward revoke all on tables from public;
alter default privileges in schema steward revoke all on sequences from public;

-- Settings -------------------------------------------------------------------------------------

create table steward.settings (
  name        text primary key check (name ~ '^[a-z][a-z0-9_.]*$'),
  value       text not null,
  type        text not null check (type in ('integer', 'numeric', 'interval', 'size', 'boolean', 'text')),
  min_value   text,
  max_value   text,
  description text not null,
  updated_at  timestamptz not null default pg_catalog.now(),
  check ((type in ('boolean', 'text')) = (min_value is null and max_value is null)
         and (min_value is null) = (max_value is null))
);
comment on table steward.settings is
  'Tunables of pg-steward (retention periods, thresholds, timeouts), one row each. Change them with steward.set_setting so the change is checked and audited. Every value is kept within its type and its range (min_value to max_value, both included) by a trigger, whatever changes it.';
comment on column steward.settings.name is
  'The setting''s name, <capability>.<what> (maintenance.cleanup_batch_size); read it with steward.setting(name).';
comment on column steward.settings.value is
  'The current value as text, in the setting''s type; a fresh installation holds the default.';
comment on column steward.settings.description is
  'What the setting changes, and what its special values (0, empty) mean.';
comment on column steward.settings.updated_at is
  'When the value last changed (steward.set_setting audits who changed it).';
comment on column steward.settings.type is
  'integer, numeric, interval, size (an amount of memory such as 16MB; empty: not set), boolean or text.';
comment on column steward.settings.min_value is
  'The smallest value accepted, in the setting''s type (null for boolean and text settings).';
comment on column steward.settings.max_value is
  'The largest value accepted, in the setting''s type (null for boolean and text settings).';

-- The rule every value obeys, checked whatever writes the row: set_setting, a migration's
-- insert, or an update by hand.
create function steward.check_setting()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  below boolean := false;
  above boolean := false;
begin
  -- The range itself is the migration author's; a bad one fails here with PostgreSQL's own error.
  case new.type
    when 'integer' then perform new.min_value::integer, new.max_value::integer;
    when 'numeric' then perform new.min_value::numeric, new.max_value::numeric;
    when 'interval' then perform new.min_value::interval, new.max_value::interval;
    when 'size' then perform pg_catalog.pg_size_bytes(new.min_value), pg_catalog.pg_size_bytes(new.max_value);
    else null;
  end case;
  begin
    case new.type
      when 'integer' then
        -- Compared as numeric, so 99999999999 is out of range rather than not an integer.
        if new.value !~ '^\s*[-+]?[0-9]+\s*$' then
          raise exception using errcode = '22P02';
        end if;
        below := new.value::numeric < new.min_value::numeric;
        above := new.value::numeric > new.max_value::numeric;
      when 'numeric' then
        below := new.value::numeric < new.min_value::numeric;
        above := new.value::numeric > new.max_value::numeric;
      when 'interval' then
        below := new.value::interval < new.min_value::interval;
        above := new.value::interval > new.max_value::interval;
      when 'size' then
        if new.value <> '' then
          below := pg_catalog.pg_size_bytes(new.value) < pg_catalog.pg_size_bytes(new.min_value);
          above := pg_catalog.pg_size_bytes(new.value) > pg_catalog.pg_size_bytes(new.max_value);
        end if;
      when 'boolean' then perform new.value::boolean;
      else null;
    end case;
  exception when others then
    raise exception 'setting "%" takes a value of type %, got "%"', new.name, new.type, new.value
      using errcode = '22023',
            hint = case new.type when 'size' then 'A size is a number with a unit (128kB, 16MB, 1GB), or empty for none.'
                                 when 'interval' then 'For example: 30 seconds, 5 minutes, 7 days.'
                                 when 'boolean' then 'true or false (on, off).'
                                 else pg_catalog.format('Values from %s to %s.', new.min_value, new.max_value) end;
  end;
  if below or above then
    raise exception 'setting "%" must be from % to %, got "%"', new.name, new.min_value, new.max_value, new.value
      using errcode = '22023';
  end if;
  return new;
end
$$;
comment on function steward.check_setting() is
  'Trigger on steward.settings: refuses (22023) a value that is not of the setting''s type or lies outside min_value to max_value, naming the range.';

create trigger check_setting before insert or update on steward.settings
  for each row execute function steward.check_setting();

create table steward.audit_log (
  id                bigint generated always as identity primary key,
  at                timestamptz not null default pg_catalog.now(),
  actor             text not null default session_user,
  action            text not null,
  target            text,
  detail            jsonb not null default '{}'::jsonb,
  current_user_name text not null default current_user,
  claimed_actor     text,
  request_id        text
);
create index audit_log_at_idx on steward.audit_log (at);
comment on table steward.audit_log is
  'One row per admin action (replay, purge, register, setting change, manual run): who did what to which object, and for which request. Read it with steward.audit_entries or `steward audit`.';
comment on column steward.audit_log.actor is
  'The role that logged in (session_user): what the database vouches for. SET ROLE and SECURITY DEFINER functions do not change it.';
comment on column steward.audit_log.current_user_name is
  'current_user when the action was recorded: the role after SET ROLE (the function''s owner when the action ran inside a SECURITY DEFINER function).';
comment on column steward.audit_log.claimed_actor is
  'Who the session said acts, from its steward.actor setting (the CLI sets cli:<os user>, the worker worker); null when unset. Any session can set it: it is a label, not an identity.';
comment on column steward.audit_log.request_id is
  'The steward.request_id setting of the transaction (an application sets it with set local, the same id it passes to record_requests); null when unset.';

create function steward.audit(action text, target text, detail jsonb default '{}'::jsonb)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  claimed text := nullif(pg_catalog.current_setting('steward.actor', true), '');
  request text := nullif(pg_catalog.current_setting('steward.request_id', true), '');
begin
  if pg_catalog.length(claimed) > 200 or pg_catalog.length(request) > 200 then
    raise exception '% is % characters long; at most 200',
      case when pg_catalog.length(claimed) > 200 then 'steward.actor' else 'steward.request_id' end,
      greatest(pg_catalog.length(claimed), pg_catalog.length(request))
      using errcode = '22001', hint = 'The same limit as record_requests'' request_id.';
  end if;
  insert into steward.audit_log (actor, action, target, detail, current_user_name, claimed_actor, request_id)
  values (session_user, action, target, coalesce(detail, '{}'::jsonb), current_user, claimed, request);
end
$$;
comment on function steward.audit(text, text, jsonb) is
  'Records an admin action in steward.audit_log with the session user, the current user, the claimed actor (setting steward.actor) and the request id (setting steward.request_id); called by every admin function of pg-steward. An actor or request id over 200 characters is refused (22001) and the action with it.';

create function steward.audit_entries(
  since timestamptz default null,
  only_action text default null,
  only_actor text default null,
  only_request_id text default null,
  max integer default 100
)
returns table (
  id bigint, at timestamptz, actor text, claimed_actor text, current_user_name text, action text,
  target text, detail jsonb, request_id text
)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if max is null or max < 1 or max > 10000 then
    raise exception 'audit_entries: max must be from 1 to 10000, got %', coalesce(max::text, 'null')
      using errcode = '22023';
  end if;
  return query
    select l.id, l.at, l.actor, l.claimed_actor, l.current_user_name, l.action, l.target, l.detail, l.request_id
      from steward.audit_log l
     where (since is null or l.at >= since)
       and (only_action is null or l.action = only_action)
       and (only_actor is null or l.actor = only_actor or l.claimed_actor = only_actor)
       and (only_request_id is null or l.request_id = only_request_id)
     order by l.at desc, l.id desc
     limit max;
end
$$;
comment on function steward.audit_entries(timestamptz, text, text, text, integer) is
  'Audit log rows, newest first, at most max (1 to 10000): since a time, of one action (only_action), by one actor (only_actor: the session user or the claimed actor), of one request (only_request_id); a null filter matches everything.';

create function steward.setting(setting_name text)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  result text;
begin
  select s.value into result from steward.settings s where s.name = setting_name;
  if not found then
    raise exception 'unknown setting "%"', setting_name
      using errcode = '22023', hint = 'select name, value, description from steward.settings lists them.';
  end if;
  return result;
end
$$;
comment on function steward.setting(text) is
  'The value of a pg-steward setting as text; an unknown name is an error.';

create function steward.setting_interval(setting_name text)
returns interval
language sql
stable
set search_path = pg_catalog, pg_temp
as $$ select steward.setting(setting_name)::interval $$;
comment on function steward.setting_interval(text) is 'The value of an interval setting.';

create function steward.setting_integer(setting_name text)
returns integer
language sql
stable
set search_path = pg_catalog, pg_temp
as $$ select steward.setting(setting_name)::integer $$;
comment on function steward.setting_integer(text) is 'The value of an integer setting.';

create function steward.set_setting(setting_name text, new_value text)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  setting steward.settings;
begin
  select * into setting from steward.settings s where s.name = setting_name for update;
  if not found then
    raise exception 'unknown setting "%"', setting_name
      using errcode = '22023', hint = 'select name, value, description from steward.settings lists them.';
  end if;
  if new_value is null then
    raise exception 'setting "%" cannot be null', setting_name using errcode = '22004';
  end if;
  -- steward.check_setting (the table's trigger) refuses a value of the wrong type or out of range.
  update steward.settings s set value = new_value, updated_at = pg_catalog.now() where s.name = setting_name;
  perform steward.audit('set_setting', setting_name,
    pg_catalog.jsonb_build_object('from', setting.value, 'to', new_value));
  return setting.value;
end
$$;
comment on function steward.set_setting(text, text) is
  'Changes a pg-steward setting, refusing (22023) a value of the wrong type or outside its range (min_value to max_value of steward.settings); audited. Returns the previous value.';

-- Cleanup ---------------------------------------------------------------------------------------

create table steward.cleanup_steps (
  name              text primary key,
  function          regprocedure,
  description       text not null,
  target            regclass,
  time_column       name,
  retention_setting text references steward.settings (name),
  check ((function is null) <> (target is null)),
  check ((target is null) = (time_column is null) and (target is null) = (retention_setting is null))
);
comment on table steward.cleanup_steps is
  'What the cleanup task removes: one row per step, registered by each capability''s migration. A plain step names a table, its time column and the interval setting that is its retention: cleanup deletes rows older than that with steward.delete_older_than. Any other step names a function that takes (batch_size integer), deletes at most that many rows past their retention and returns how many it deleted. Cleanup runs a step until it deletes fewer than a batch.';
comment on column steward.cleanup_steps.function is 'A step with logic of its own: its function (null for a plain step).';
comment on column steward.cleanup_steps.target is 'A plain step: the table whose old rows it deletes.';
comment on column steward.cleanup_steps.time_column is 'A plain step: the column that says how old a row is.';
comment on column steward.cleanup_steps.retention_setting is 'A plain step: the interval setting (steward.settings) rows are kept for.';

create function steward.delete_older_than(target regclass, time_column name, cutoff timestamptz, batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  deleted bigint;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be a positive integer, got %', coalesce(batch_size::text, 'null')
      using errcode = '22023';
  end if;
  if cutoff is null then
    raise exception 'cutoff must not be null' using errcode = '22004';
  end if;
  -- Oldest first, so an index on the time column serves both the search and the order.
  execute pg_catalog.format(
    'delete from %1$s where ctid = any (array(select ctid from %1$s where %2$I < $1 order by %2$I limit $2))',
    target, time_column)
    using cutoff, batch_size;
  get diagnostics deleted = row_count;
  return deleted;
end
$$;
comment on function steward.delete_older_than(regclass, name, timestamptz, integer) is
  'Deletes at most batch_size rows of a table whose time_column is before cutoff, oldest first; returns how many. The building block of cleanup steps.';

-- Metrics -----------------------------------------------------------------------------------------
-- Every database-wide series of /metrics comes from one statement, `select * from steward.metrics()`:
-- the union of one source function per capability, each registered here by its own migration.

insert into steward.settings (name, value, type, min_value, max_value, description) values
  ('metrics.max_label_values', '100', 'integer', '2', '100000',
   'Distinct values one label of one metric may take in steward.metrics() (/metrics), _other included: past it, the values with the largest totals are kept and the rest are summed under the value _other. Bounds what client-chosen names (circuits, endpoints) cost a scrape and Prometheus.')
on conflict (name) do nothing;

create table steward.metric_sources (
  name        text primary key check (name ~ '^[a-z][a-z0-9_]*$'),
  function    regprocedure not null,
  description text not null
);
comment on table steward.metric_sources is
  'The sources steward.metrics() unites: one function per capability, registered by that capability''s migration (insert ... on conflict (name) do update). Each takes no argument and returns table (metric text, kind text, help text, labels jsonb, value double precision).';
comment on column steward.metric_sources.function is 'The source: a function of no argument returning the columns of steward.metrics().';

create function steward.metric_samples()
returns table (source text, metric text, kind text, help text, labels jsonb, value double precision)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  entry record;
  began timestamptz;
  problem text;
begin
  for entry in
    select s.name, s.function, n.nspname, p.proname, p.pronargs
      from steward.metric_sources s
      left join pg_catalog.pg_proc p on p.oid = s.function
      left join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     order by s.name
  loop
    began := pg_catalog.clock_timestamp();
    problem := null;
    begin
      if entry.proname is null then
        raise exception 'function % no longer exists', entry.function::oid;
      elsif entry.pronargs <> 0 then
        raise exception 'function % takes arguments', entry.function;
      end if;
      -- A source that raises part-way may have returned rows already: steward.metrics()
      -- leaves out every row of a source whose error gauge is 1.
      return query execute pg_catalog.format(
        'select %L::text, m.metric, m.kind, m.help, m.labels, m.value from %I.%I() as m',
        entry.name, entry.nspname, entry.proname);
    exception when others then
      get stacked diagnostics problem = message_text;
      raise warning 'steward.metrics(): source "%" failed: %', entry.name, problem;
    end;
    return query values
      (entry.name, 'steward_metric_source_errors', 'gauge',
       'Whether a source of steward.metrics() failed in the last reading (1: its series are missing; the error is in the database''s log and the worker''s).',
       pg_catalog.jsonb_build_object('source', entry.name), (problem is not null)::integer::float8),
      (entry.name, 'steward_metric_source_seconds', 'gauge',
       'Time a source of steward.metrics() took in the last reading.',
       pg_catalog.jsonb_build_object('source', entry.name),
       extract(epoch from pg_catalog.clock_timestamp() - began)::float8);
  end loop;
end
$$;
comment on function steward.metric_samples() is
  'The rows of every registered metric source as they come, with the source''s name, plus steward_metric_source_errors{source} (1 when the source raised: the error is raised again as a warning) and steward_metric_source_seconds{source}. steward.metrics() checks, caps and sums them; this is for finding which source says what.';

create function steward.metrics()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language sql
stable
set search_path = pg_catalog, pg_temp
-- Capping a source of tens of thousands of series sorts them: in memory, not on disk. JIT
-- compiling this statement (its estimate is large) takes seconds, running it milliseconds.
set work_mem = '32MB'
set jit = off
as $$
  -- Series with the same metric and labels are summed. A label with more than `cap` distinct
  -- values (only possible in a metric with more than `cap` series) keeps the cap - 1 values
  -- with the largest totals and sums the rest under _other.
  with sample as materialized (
    select s.source, s.metric, s.kind, s.help, coalesce(s.labels, '{}'::jsonb) as labels, s.value
      from steward.metric_samples() s
  ), failed as (
    -- Sources that raised, or returned a row Prometheus would reject the whole scrape for.
    select s.source
      from sample s
     group by s.source, s.metric, s.kind
    having s.metric is null or s.metric !~ '^steward_[a-zA-Z0-9_]*$' or s.kind is null or s.kind not in ('gauge', 'counter')
        or (s.kind = 'counter' and s.metric !~ '_total$')
        or pg_catalog.bool_or(pg_catalog.jsonb_typeof(s.labels) <> 'object' or s.value is null)
        or (s.metric = 'steward_metric_source_errors' and pg_catalog.max(s.value) > 0)
  ), kept as materialized (
    select pg_catalog.row_number() over () as n, s.metric, s.kind, s.help, s.labels,
           case when s.metric = 'steward_metric_source_errors' and s.source in (select f.source from failed f) then 1
                else s.value end as value
      from sample s
     where s.source not in (select f.source from failed f)
        or s.metric in ('steward_metric_source_errors', 'steward_metric_source_seconds')
  ), cap as (
    select greatest(steward.setting_integer('metrics.max_label_values'), 2) as label_values
  ), big as (
    select k.metric from kept k group by k.metric having pg_catalog.count(*) > (select c.label_values from cap c)
  ), label_total as (
    select k.metric, l.key, l.value as label_value, pg_catalog.sum(pg_catalog.abs(k.value)) as total
      from kept k
      join big b on b.metric = k.metric
     cross join lateral pg_catalog.jsonb_each_text(k.labels) as l
     group by k.metric, l.key, l.value
  ), capped_key as (
    -- The labels of a metric with more distinct values than the cap.
    select t.metric, t.key from label_total t
     group by t.metric, t.key having pg_catalog.count(*) > (select c.label_values from cap c)
  ), kept_value as (
    -- Their values that keep their names: the cap - 1 with the largest totals.
    select r.metric, r.key, r.label_value
      from (select t.metric, t.key, t.label_value,
                   pg_catalog.row_number() over (partition by t.metric, t.key order by t.total desc, t.label_value) as rank
              from label_total t
              join capped_key c on c.metric = t.metric and c.key = t.key) as r
     where r.rank < (select c.label_values from cap c)
  ), capped_label as materialized (
    -- Materialized, so the lookup below is a hash join on (metric, key, value).
    select k.n, k.metric, c.key, k.labels ->> c.key as label_value
      from kept k
      join capped_key c on c.metric = k.metric
     where k.labels ? c.key
  ), to_other as (
    select l.n, pg_catalog.jsonb_object_agg(l.key, '_other') as patch
      from capped_label l
     where not exists (select from kept_value v
                        where v.metric = l.metric and v.key = l.key and v.label_value = l.label_value)
     group by l.n
  )
  select k.metric, pg_catalog.min(k.kind), pg_catalog.min(k.help), k.labels || coalesce(o.patch, '{}'::jsonb),
         pg_catalog.sum(k.value)
    from kept k
    left join to_other o on o.n = k.n
   group by k.metric, k.labels || coalesce(o.patch, '{}'::jsonb)
$$;
comment on function steward.metrics() is
  'Every database-wide /metrics series in one statement: the union of the registered sources (steward.metric_sources), series with equal metric and labels summed, each label capped at metrics.max_label_values distinct values (the rest summed under _other). A source that raises, or returns a row Prometheus would reject (a name not steward_…, a kind not gauge or counter, a counter not named …_total, labels not a JSON object, a null value), is left out whole and steward_metric_source_errors{source} is 1, so one broken capability never empties the scrape. For the worker (which caches it for a few seconds) and for psql.';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
