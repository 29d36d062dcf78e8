--! Previous: sha1:01d069056b98ee6bf90497394baa1bbeb5bb6c87
--! Hash: sha1:6f5d137795051800c292f9442a1c948109048613
--! Message: leases

-- Concurrency leases: at most max_concurrent unexpired leases of a key at once, across every
-- process. The leases live in UNLOGGED tables: a crash of the server frees every lease.
--
-- Every client function locks the rows it decides on, reads the clock after it holds the
-- locks, and so is exact under any number of concurrent callers. In REPEATABLE READ or
-- SERIALIZABLE a concurrent change to the same row makes the call fail with a serialization
-- error (SQLSTATE 40001) instead of deciding on a stale snapshot.

create unlogged table steward.lease_keys (
  key          text primary key,
  acquisitions bigint not null default 0
);
comment on table steward.lease_keys is
  'One row per lease key, locked (and written) by every lease_acquire on the key so that acquisitions on one key are serialized. Unlogged.';

create unlogged table steward.leases (
  id          uuid primary key,
  key         text not null,
  acquired_at timestamptz not null,
  expires_at  timestamptz not null
);
create index leases_key_expires_at_idx on steward.leases (key, expires_at);
create index leases_expires_at_idx on steward.leases (expires_at);
comment on table steward.leases is
  'Concurrency leases: a lease counts against its key until released or until expires_at; an expired one counts for nothing even before cleanup_leases removes it. Unlogged: a crash frees every lease.';

create function steward.lease_acquire(key text, max_concurrent integer, ttl interval default '60 seconds')
returns uuid
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  moment timestamptz;
  held integer;
  lease uuid;
begin
  if lease_acquire.key is null or lease_acquire.max_concurrent is null or lease_acquire.ttl is null then
    raise exception 'lease_acquire needs a key, max_concurrent and ttl' using errcode = '22004';
  end if;
  if lease_acquire.key = '' then
    raise exception 'lease key must not be empty' using errcode = '22023';
  end if;
  if pg_catalog.octet_length(lease_acquire.key) > 1024 then
    raise exception 'lease key is % bytes long; at most 1024 are allowed', pg_catalog.octet_length(lease_acquire.key)
      using errcode = '22023';
  end if;
  if lease_acquire.max_concurrent <= 0 then
    raise exception 'max_concurrent must be positive, got %', lease_acquire.max_concurrent using errcode = '22023';
  end if;
  if lease_acquire.ttl <= interval '0' then
    raise exception 'ttl must be a positive interval, got %', lease_acquire.ttl using errcode = '22023';
  end if;

  -- The key row is the lock; writing it (not only locking it) makes a REPEATABLE READ caller
  -- racing on the same key fail with a serialization error rather than count a stale snapshot.
  insert into steward.lease_keys as k (key) values (lease_acquire.key)
      on conflict on constraint lease_keys_pkey do update set acquisitions = k.acquisitions + 1;
  moment := steward.clock();
  select count(*) into held
    from (select from steward.leases l
           where l.key = lease_acquire.key and l.expires_at > moment
           limit lease_acquire.max_concurrent) live;
  if held >= lease_acquire.max_concurrent then
    return null;
  end if;
  lease := pg_catalog.gen_random_uuid();
  insert into steward.leases (id, key, acquired_at, expires_at) values (lease, lease_acquire.key, moment, moment + lease_acquire.ttl);
  return lease;
end
$$;
comment on function steward.lease_acquire(text, integer, interval) is
  'Takes one of max_concurrent slots of key for ttl: returns the lease id, or NULL when max_concurrent unexpired leases exist. Exact under concurrency; an expired lease counts for nothing, so a crashed holder frees its slot after ttl.';

create function steward.lease_release(lease uuid)
returns boolean
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  was_live boolean;
begin
  delete from steward.leases l where l.id = lease_release.lease
  returning l.expires_at > steward.clock() into was_live;
  return coalesce(was_live, false);
end
$$;
comment on function steward.lease_release(uuid) is
  'Releases a lease; true when it was still held (unexpired), false when it had expired, was released already, or is unknown (or NULL).';

create function steward.cleanup_leases(batch_size integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  expired bigint;
  idle bigint;
begin
  if batch_size is null or batch_size <= 0 then
    raise exception 'batch_size must be a positive integer, got %', coalesce(batch_size::text, 'null') using errcode = '22023';
  end if;
  with doomed as (
    select l.id from steward.leases l
     where l.expires_at <= steward.clock()
     limit batch_size
       for update skip locked
  )
  delete from steward.leases l using doomed d where l.id = d.id;
  get diagnostics expired = row_count;
  if expired >= batch_size then
    return expired;
  end if;
  -- Key rows without any lease; one being acquired right now is locked and skipped.
  with doomed as (
    select k.key from steward.lease_keys k
     where not exists (select from steward.leases l where l.key = k.key)
     limit batch_size - expired
       for update skip locked
  )
  delete from steward.lease_keys k using doomed d where k.key = d.key;
  get diagnostics idle = row_count;
  return expired + idle;
end
$$;
comment on function steward.cleanup_leases(integer) is
  'Deletes at most batch_size expired leases and lease keys without leases; returns how many rows went.';

insert into steward.cleanup_steps (name, function, description) values
  ('leases', 'steward.cleanup_leases(integer)'::regprocedure,
   'expired leases and lease keys without leases')
on conflict (name) do update set function = excluded.function, description = excluded.description;

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function
  steward.lease_acquire(text, integer, interval),
  steward.lease_release(uuid)
to steward_client;
