--! Previous: sha1:54ea353f30d281ac3bd7362d140311e2dab52c68
--! Hash: sha1:6540f43d897f074a51b5db4af7d1a39e7b8c21c1
--! Message: uninstall

-- Uninstalling: what `steward uninstall` removes (and keeps), as rows a DBA can read and run
-- by hand. Everything pg-steward made lives in schema steward except the triggers it put on
-- other schemas' tables, the jobs and cron bookkeeping of its tasks in graphile-worker's tables,
-- and the cluster-wide role steward_client.

-- pg_identify_object names no schema for rules, triggers, column defaults or policies: theirs is
-- their table's.
create function steward.object_schema(classid oid, objid oid)
returns oid
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select case classid
    when 'pg_catalog.pg_class'::regclass then (select c.relnamespace from pg_catalog.pg_class c where c.oid = objid)
    when 'pg_catalog.pg_proc'::regclass then (select p.pronamespace from pg_catalog.pg_proc p where p.oid = objid)
    when 'pg_catalog.pg_type'::regclass then (select t.typnamespace from pg_catalog.pg_type t where t.oid = objid)
    when 'pg_catalog.pg_constraint'::regclass then (select c.connamespace from pg_catalog.pg_constraint c where c.oid = objid)
    when 'pg_catalog.pg_rewrite'::regclass then
      (select c.relnamespace from pg_catalog.pg_rewrite r join pg_catalog.pg_class c on c.oid = r.ev_class where r.oid = objid)
    when 'pg_catalog.pg_trigger'::regclass then
      (select c.relnamespace from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid where t.oid = objid)
    when 'pg_catalog.pg_attrdef'::regclass then
      (select c.relnamespace from pg_catalog.pg_attrdef a join pg_catalog.pg_class c on c.oid = a.adrelid where a.oid = objid)
    when 'pg_catalog.pg_policy'::regclass then
      (select c.relnamespace from pg_catalog.pg_policy p join pg_catalog.pg_class c on c.oid = p.polrelid where p.oid = objid)
    else (select n.oid from pg_catalog.pg_namespace n
           where n.nspname = (pg_catalog.pg_identify_object(classid, objid, 0)).schema)
  end
$$;
comment on function steward.object_schema(oid, oid) is
  'The schema an object belongs to (a rule, trigger, column default or policy: its table''s), from its pg_depend classid and objid; null for objects outside any schema.';

create function steward.uninstall_plan(
  task_identifiers text[] default array['refresh_materialized_view', 'schedule_refreshes',
    'drain_invalidations', 'vacuum_tables', 'cleanup', 'rollup_requests', 'recalculate', 'recalculate_batch']
)
returns table (step integer, action text, object text, statement text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  item record;
  counts record;
begin
  step := 0;

  -- Blockers: anything that would break, or be dropped with the schema, if it went now.
  action := 'blocker';
  statement := null;
  for item in
    select w.host, w.pid, w.heartbeat_at from steward.workers w
     where w.heartbeat_at > pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout')
     order by w.started_at
  loop
    step := step + 1;
    object := pg_catalog.format('worker %s:%s is alive (heartbeat at %s): stop every steward worker first',
                                coalesce(item.host, '?'), coalesce(item.pid::text, '?'), item.heartbeat_at);
    return next;
  end loop;
  -- Objects of other schemas that depend on steward's (a view over steward.request_stats_5m, a
  -- column of a steward type): DROP SCHEMA … CASCADE would drop them too. The triggers this
  -- plan drops first are not among them.
  for item in
    -- A view's rule is named by its view.
    select distinct case when d.classid = 'pg_catalog.pg_rewrite'::regclass
                         then (select pg_catalog.pg_describe_object('pg_catalog.pg_class'::regclass, r.ev_class, 0)
                                 from pg_catalog.pg_rewrite r where r.oid = d.objid)
                         else pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) end as dependent,
           pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0) as referenced
      from pg_catalog.pg_depend d
      join (select 'pg_catalog.pg_class'::regclass as classid, c.oid from pg_catalog.pg_class c
             where c.relnamespace = 'steward'::regnamespace
            union all
            select 'pg_catalog.pg_proc'::regclass, p.oid from pg_catalog.pg_proc p
             where p.pronamespace = 'steward'::regnamespace
            union all
            select 'pg_catalog.pg_type'::regclass, t.oid from pg_catalog.pg_type t
             where t.typnamespace = 'steward'::regnamespace) as ours
        on d.refclassid = ours.classid and d.refobjid = ours.oid
     where d.deptype = 'n'
       and steward.object_schema(d.classid, d.objid) is distinct from 'steward'::regnamespace
       and not (d.classid = 'pg_catalog.pg_trigger'::regclass
                and exists (select from pg_catalog.pg_trigger t
                             where t.oid = d.objid
                               and (t.tgname in ('steward_invalidate_insert', 'steward_invalidate_update', 'steward_invalidate_delete')
                                    or (t.tgname = '_steward_dead_letters'
                                        and t.tgrelid = pg_catalog.to_regclass('graphile_worker._private_jobs'))
                                    or (t.tgname = '_steward_queue_wakeup'
                                        and t.tgrelid = pg_catalog.to_regclass('graphile_worker._private_job_queues')))))
     order by 1, 2
  loop
    step := step + 1;
    object := pg_catalog.format('%s depends on %s: drop it or change it first, or DROP SCHEMA steward CASCADE would drop it too',
                                item.dependent, item.referenced);
    return next;
  end loop;

  -- What goes, in order.
  action := 'remove';
  if pg_catalog.to_regclass('graphile_worker._private_jobs') is not null
     and exists (select from pg_catalog.pg_trigger t
                  where t.tgrelid = 'graphile_worker._private_jobs'::regclass and t.tgname = '_steward_dead_letters') then
    step := step + 1;
    object := 'the dead-letter trigger _steward_dead_letters on graphile_worker._private_jobs';
    statement := 'drop trigger _steward_dead_letters on graphile_worker._private_jobs';
    return next;
  end if;
  if pg_catalog.to_regclass('graphile_worker._private_job_queues') is not null
     and exists (select from pg_catalog.pg_trigger t
                  where t.tgrelid = 'graphile_worker._private_job_queues'::regclass and t.tgname = '_steward_queue_wakeup') then
    step := step + 1;
    object := 'the named-queue wake-up trigger _steward_queue_wakeup on graphile_worker._private_job_queues';
    statement := 'drop trigger _steward_queue_wakeup on graphile_worker._private_job_queues';
    return next;
  end if;
  for item in
    select t.target, pg_catalog.array_agg(tr.tgname::text order by tr.tgname) as triggers
      from steward.tracked_tables t
      join pg_catalog.pg_trigger tr
        on tr.tgrelid = t.target and tr.tgname in ('steward_invalidate_insert', 'steward_invalidate_update', 'steward_invalidate_delete')
     group by t.target
     order by t.target::text
  loop
    step := step + 1;
    object := pg_catalog.format('the tracking triggers on %s (%s); the table and its rows stay',
                                item.target, pg_catalog.array_to_string(item.triggers, ', '));
    select pg_catalog.string_agg(pg_catalog.format('drop trigger %I on %s', trigger_name, item.target), '; ')
      into statement
      from pg_catalog.unnest(item.triggers) as trigger_name;
    return next;
  end loop;
  if pg_catalog.to_regclass('graphile_worker._private_jobs') is not null then
    select pg_catalog.count(*) as jobs, pg_catalog.string_agg(distinct t.identifier, ', ') as tasks into counts
      from graphile_worker._private_jobs j
      join graphile_worker._private_tasks t on t.id = j.task_id
     where t.identifier = any (task_identifiers);
    if counts.jobs > 0 then
      step := step + 1;
      object := pg_catalog.format('%s queued job(s) of pg-steward''s tasks (%s): no worker would run them', counts.jobs, counts.tasks);
      statement := pg_catalog.format(
        'delete from graphile_worker._private_jobs j using graphile_worker._private_tasks t where t.id = j.task_id and t.identifier = any (%L::text[])',
        task_identifiers);
      return next;
    end if;
    if exists (select from graphile_worker._private_known_crontabs k where k.identifier like 'steward:%') then
      step := step + 1;
      object := 'graphile-worker''s records of pg-steward''s schedules (known crontabs steward:*)';
      statement := 'delete from graphile_worker._private_known_crontabs where identifier like ''steward:%''';
      return next;
    end if;
  end if;
  select (select pg_catalog.count(*) from pg_catalog.pg_class c
           where c.relnamespace = 'steward'::regnamespace and c.relkind in ('r', 'p')) as tables,
         (select pg_catalog.count(*) from pg_catalog.pg_class c
           where c.relnamespace = 'steward'::regnamespace and c.relkind in ('v', 'm')) as views,
         (select pg_catalog.count(*) from pg_catalog.pg_proc p where p.pronamespace = 'steward'::regnamespace) as functions,
         (select pg_catalog.count(*) from steward.dead_letters d where d.replayed_at is null) as dead_letters,
         (select pg_catalog.count(*) from steward.invalidations) as invalidations,
         (select pg_catalog.count(*) from steward.audit_log) as audits
    into counts;
  step := step + 1;
  object := pg_catalog.format(
    'schema steward: %s tables, %s views, %s functions, the settings and registries; with them their data: %s dead letter(s) not replayed, %s undelivered invalidation(s), %s audit row(s)',
    counts.tables, counts.views, counts.functions, counts.dead_letters, counts.invalidations, counts.audits);
  statement := 'drop schema steward cascade';
  return next;

  if exists (select from pg_catalog.pg_roles r where r.rolname = 'steward_client') then
    action := 'remove if unused';
    step := step + 1;
    select pg_catalog.format('role steward_client (granted to %s) and its grants, unless another database of the cluster still uses it',
                             coalesce(pg_catalog.string_agg(m.member::regrole::text, ', ' order by m.member::regrole::text), 'no role'))
      into object
      from pg_catalog.pg_auth_members m
     where m.roleid = 'steward_client'::regrole;
    statement := 'drop role steward_client';
    return next;
  end if;

  -- What stays.
  action := 'keep';
  statement := null;
  if pg_catalog.to_regclass('graphile_worker._private_jobs') is not null then
    step := step + 1;
    select pg_catalog.format('schema graphile_worker, usable by plain graphile-worker, with %s queued job(s) of other tasks; drop it yourself (drop schema graphile_worker cascade) if nothing else uses it',
                             pg_catalog.count(*))
      into object
      from graphile_worker._private_jobs j
      join graphile_worker._private_tasks t on t.id = j.task_id
     where t.identifier <> all (task_identifiers);
    return next;
  end if;
  step := step + 1;
  select pg_catalog.format('your tables, views and data: %s tracked table(s), %s registered view(s) and %s recalculation function(s) stay as they are',
                           (select pg_catalog.count(*) from steward.tracked_tables),
                           (select pg_catalog.count(*) from steward.materialized_views),
                           (select pg_catalog.count(*) from steward.recalculations))
    into object;
  return next;
end
$$;
comment on function steward.uninstall_plan(text[]) is
  'What removing pg-steward from this database takes, one row per step in order: blockers (live workers; objects of other schemas that depend on steward objects and would be dropped with them), what it removes with the statement that does it (the dead-letter and named-queue wake-up triggers, the tracking triggers on your tables, the queued jobs and cron records of pg-steward''s tasks task_identifiers, schema steward and its data, role steward_client if no other database uses it), and what stays. steward uninstall runs the statements in one transaction; by hand: select statement from steward.uninstall_plan() where action like ''remove%'' order by step \gexec';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
