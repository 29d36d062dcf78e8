-- The Recall example: chat threads whose "resolve" requests call external APIs, as its
-- production checklist describes them. Idempotent: `steward example install recall` runs it on
-- every install. Everything lives in schema `recall` (removal drops it); the checklist's
-- unqualified names resolve with `set search_path = recall, public` (the service sets it).

create schema if not exists recall;
comment on schema recall is 'The Recall example of pg-steward (steward example install|remove recall).';

create table if not exists recall.recall_threads (
  id              uuid primary key default gen_random_uuid(),
  user_id         text not null check (user_id <> ''),
  title           text not null default '',
  created_at      timestamptz not null default pg_catalog.clock_timestamp(),
  last_message_at timestamptz,
  deleted_at      timestamptz,
  archived_at     timestamptz
);
comment on table recall.recall_threads is
  'A user''s conversation. Tracked: each write enqueues recall:thread:<id> and recall:user:<user_id>, which the service''s cache listens for.';

create table if not exists recall.recall_messages (
  id           uuid primary key default gen_random_uuid(),
  thread_id    uuid not null references recall.recall_threads (id) on delete cascade,
  message_type text not null check (message_type in ('user', 'assistant', 'transcript', 'song')),
  content      text not null default '',
  candidate    jsonb,
  created_at   timestamptz not null default pg_catalog.clock_timestamp()
);
comment on table recall.recall_messages is
  'The messages of a thread, newest first in pages. candidate holds what an external API proposed (intent, song, completion). Tracked: each write enqueues recall:thread:<thread_id>.';

-- The checklist's five indexes. The pagination index is unique so steward.page accepts
-- (created_at desc, id desc) within a thread as a total order and walks it backwards.
create unique index if not exists idx_recall_messages_thread_created
  on recall.recall_messages (thread_id, created_at, id);
create index if not exists idx_recall_threads_user_last_message
  on recall.recall_threads (user_id, last_message_at desc nulls last);
create index if not exists idx_recall_threads_active
  on recall.recall_threads (user_id) where deleted_at is null and archived_at is null;
create index if not exists idx_recall_messages_type
  on recall.recall_messages (message_type);
create index if not exists idx_recall_messages_candidate_json
  on recall.recall_messages using gin (candidate);

create or replace function recall.get_recall_messages_paginated(thread_id uuid, cursor text, page_size integer)
returns jsonb
language sql
stable
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select steward.page('recall.recall_messages'::regclass, array['created_at desc', 'id desc'],
                      get_recall_messages_paginated.cursor, get_recall_messages_paginated.page_size,
                      pg_catalog.jsonb_build_object('thread_id', get_recall_messages_paginated.thread_id))
$$;
comment on function recall.get_recall_messages_paginated(uuid, text, integer) is
  'One page of a thread''s messages, newest first: {"rows": [...], "next": cursor or null}. cursor null for the first page; page_size 1 to 1000. steward.page does the checking (class 22 errors on a bad cursor or size).';

create or replace function recall.insert_recall_messages_batch(messages jsonb)
returns integer
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
declare
  inserted integer;
begin
  inserted := steward.batch_insert('recall.recall_messages'::regclass, messages);
  -- The threads' ordering column follows their newest message (steward.batch_insert has
  -- checked the shape: an array of objects whose keys are columns).
  update recall.recall_threads t
     set last_message_at = m.newest
    from (select (e ->> 'thread_id')::uuid as thread_id,
                 max(coalesce((e ->> 'created_at')::timestamptz, pg_catalog.clock_timestamp())) as newest
            from pg_catalog.jsonb_array_elements(messages) as e
           group by 1) as m
   where t.id = m.thread_id
     and (t.last_message_at is null or t.last_message_at < m.newest);
  return inserted;
end
$$;
comment on function recall.insert_recall_messages_batch(jsonb) is
  'Inserts messages (a JSON array of objects with thread_id, message_type, content, candidate) in one statement through steward.batch_insert, all or nothing, and moves their threads'' last_message_at. Returns how many rows it inserted.';

create or replace function recall.remove()
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  -- What install registered with steward, then the schema itself.
  if to_regclass('recall.recall_messages') is not null then
    perform steward.untrack_table('recall.recall_messages'::regclass)
      where exists (select from steward.tracked_tables t where t.target = 'recall.recall_messages'::regclass);
  end if;
  if to_regclass('recall.recall_threads') is not null then
    perform steward.untrack_table('recall.recall_threads'::regclass)
      where exists (select from steward.tracked_tables t where t.target = 'recall.recall_threads'::regclass);
  end if;
  perform steward.drop_rate_limit('recall');
  delete from steward.circuit_transitions where circuit like 'recall:%';
  delete from steward.circuit_states where name like 'recall:%';
  delete from steward.circuits where name like 'recall:%';
  delete from steward.invalidations where tag like 'recall:%';
  drop schema recall cascade;
end
$$;
comment on function recall.remove() is
  'Removes the example: untracks its tables, drops its rate-limit policy, circuits and pending invalidations, then schema recall. Run by `steward example remove recall`.';

-- What steward does with it --------------------------------------------------------------------

do $$
begin
  if not exists (select from steward.tracked_tables t
                  where t.target = 'recall.recall_threads'::regclass
                    and t.tags = array['recall:thread:{id}', 'recall:user:{user_id}']) then
    perform steward.track_table('recall.recall_threads'::regclass, array['recall:thread:{id}', 'recall:user:{user_id}']);
  end if;
  if not exists (select from steward.tracked_tables t
                  where t.target = 'recall.recall_messages'::regclass and t.tags = array['recall:thread:{thread_id}']) then
    perform steward.track_table('recall.recall_messages'::regclass, array['recall:thread:{thread_id}']);
  end if;
  -- Per user: 10 a minute and 100 an hour, exact windows (the 11th request of any minute is refused).
  perform steward.set_rate_limit('recall', 10, '1 minute', true);
  perform steward.set_rate_limit('recall', 100, '1 hour', true);
  -- One breaker per external API: open after 5 failures, 60 s, one half-open probe.
  perform steward.circuit_configure(api, 5, '60 seconds', 1)
     from pg_catalog.unnest(array['recall:transcription', 'recall:intent', 'recall:completion',
                                  'recall:music_recognition']) as api;
end
$$;
