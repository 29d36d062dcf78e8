--! Previous: sha1:f56a2e958d81cfa4a2b65253d2efc2079f6eb62e
--! Hash: sha1:1165706cd83790b43d93a263e4f7e57f5479ccee
--! Message: batch insert

-- Batch insert of a JSON array of objects into any table the caller may write
-- (steward.batch_insert), for clients.
--
-- batch_insert is SECURITY INVOKER: the caller's privileges, row-level security and
-- triggers apply to the target exactly as in the caller's own statements. It deliberately does
-- not pin search_path, because a pinned path would also apply to the target's triggers and to the
-- functions its policies call, and break those that use unqualified names. Instead everything
-- it generates is qualified: the table, pg_catalog functions, each value's type, and each
-- comparison operator (taken from the column type's default btree operator class, so the
-- comparison is the one ORDER BY uses and cannot be shadowed by an operator of the same name in
-- the caller's search_path).

-- Batch insert ---------------------------------------------------------------------------------

create function steward.batch_insert(target regclass, rows jsonb, on_conflict text default 'error')
returns integer
language plpgsql
volatile
security invoker
as $$
declare
  relation record;
  total integer;
  columns text[];
  types text[];
  first_keys text[];
  not_object bigint;
  empty_object bigint;
  unknown_key_row bigint;
  uniform boolean;
  unknown_keys text;
  shape_keys text[];
  shape_position bigint;
  inserted integer := 0;
  affected integer;
begin
  if on_conflict is null or on_conflict not in ('error', 'ignore') then
    raise exception 'batch_insert: on_conflict must be error or ignore, got %', coalesce('"' || on_conflict || '"', 'null')
      using errcode = '22023', hint = 'error: a conflicting row fails the whole batch; ignore: conflicting rows are skipped (ON CONFLICT DO NOTHING).';
  end if;
  if target is null then
    raise exception 'batch_insert: target must name a table, got null' using errcode = '22004';
  end if;
  select n.nspname, c.relname, c.relkind into relation
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.oid = target;
  if not found then
    raise exception 'batch_insert: no relation has oid %', target::oid using errcode = '22023';
  end if;
  if relation.relkind not in ('r', 'p', 'v', 'f') then
    raise exception 'batch_insert: %.% is not a table', relation.nspname, relation.relname using errcode = '22023';
  end if;
  if pg_catalog.jsonb_typeof(rows) is distinct from 'array' then
    raise exception 'batch_insert: rows must be a JSON array of objects, got %', coalesce(pg_catalog.jsonb_typeof(rows), 'null')
      using errcode = '22023', hint = 'For example [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}].';
  end if;
  total := pg_catalog.jsonb_array_length(rows);
  if total = 0 then
    return 0;
  end if;
  if total > 10000 then
    raise exception 'batch_insert: at most 10000 rows per call, got %', total
      using errcode = '22023', hint = 'Split the rows into batches of at most 10000 (each call is all or nothing on its own).';
  end if;

  -- Keys must be columns of the target. The common batch has the same keys in every row: one
  -- pass over the rows (in C per row) checks that against the first row's keys; only a batch
  -- that fails it is examined further.
  select pg_catalog.array_agg(a.attname::text order by a.attnum),
         pg_catalog.array_agg(pg_catalog.format('%I.%I', tn.nspname, ty.typname) order by a.attnum)
    into columns, types
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_type ty on ty.oid = a.atttypid
    join pg_catalog.pg_namespace tn on tn.oid = ty.typnamespace
   where a.attrelid = target and a.attnum > 0 and not a.attisdropped;
  if pg_catalog.jsonb_typeof(rows -> 0) = 'object' then
    select coalesce(pg_catalog.array_agg(k order by k), '{}') into first_keys from pg_catalog.jsonb_object_keys(rows -> 0) as k;
  end if;
  select pg_catalog.bool_and(e.value operator(pg_catalog.?&) first_keys and e.value operator(pg_catalog.-) first_keys = '{}'::jsonb)
    into uniform
    from pg_catalog.jsonb_array_elements(rows) as e(value);
  uniform := coalesce(uniform and pg_catalog.cardinality(first_keys) > 0, false);
  if not uniform then
    select pg_catalog.min(e.position) filter (where pg_catalog.jsonb_typeof(e.value) <> 'object'),
           pg_catalog.min(e.position) filter (where e.value = '{}'::jsonb)
      into not_object, empty_object
      from pg_catalog.jsonb_array_elements(rows) with ordinality as e(value, position);
    if not_object is not null then
      raise exception 'batch_insert: rows[%] is %, not a JSON object', not_object - 1, pg_catalog.jsonb_typeof(rows -> (not_object::integer - 1))
        using errcode = '22023';
    end if;
    if empty_object is not null then
      raise exception 'batch_insert: rows[%] is an empty object', empty_object - 1
        using errcode = '22023', hint = 'Give each row at least one column.';
    end if;
  end if;
  select pg_catalog.string_agg(pg_catalog.format('"%s"', u.key), ', ' order by u.key), pg_catalog.min(u.position) - 1
    into unknown_keys, unknown_key_row
    from (select k as key, pg_catalog.min(e.position) as position
            from pg_catalog.jsonb_array_elements(case when uniform then pg_catalog.jsonb_build_array(rows -> 0) else rows end) with ordinality as e(value, position),
                 pg_catalog.jsonb_object_keys(e.value operator(pg_catalog.-) columns) as k
           group by k) as u;
  if unknown_keys is not null then
    raise exception 'batch_insert: unknown key(s) %: not columns of %.%', unknown_keys, relation.nspname, relation.relname
      using errcode = '22023',
            hint = pg_catalog.format('rows[%s] is the first row with one. The columns are: %s.', unknown_key_row, pg_catalog.array_to_string(columns, ', '));
  end if;

  -- One INSERT … SELECT from jsonb_to_recordset per set of keys (one for a uniform batch), so a
  -- key a row leaves out gets the column's default, as in a plain INSERT naming only its keys.
  -- The values are converted by the column types' input functions; the caller's privileges,
  -- row-level security, constraints and triggers apply. Rows with the same keys go in in array
  -- order.
  for shape_keys, shape_position in
    select first_keys, 1::bigint where uniform
    union all
    select s.keys, pg_catalog.min(s.position)
      from (select e.position, array(select k from pg_catalog.jsonb_object_keys(e.value) as k order by k) as keys
              from pg_catalog.jsonb_array_elements(rows) with ordinality as e(value, position)
             where not uniform) as s
     group by s.keys
     order by 2
  loop
    execute pg_catalog.format('insert into %I.%I (%s) select %s from pg_catalog.jsonb_to_recordset($1) as r(%s)%s',
      relation.nspname, relation.relname,
      (select pg_catalog.string_agg(pg_catalog.format('%I', k), ', ') from pg_catalog.unnest(shape_keys) as k),
      (select pg_catalog.string_agg(pg_catalog.format('r.%I', k), ', ') from pg_catalog.unnest(shape_keys) as k),
      (select pg_catalog.string_agg(pg_catalog.format('%I %s', k, types[pg_catalog.array_position(columns, k)]), ', ')
         from pg_catalog.unnest(shape_keys) as k),
      case when on_conflict = 'ignore' then ' on conflict do nothing' else '' end)
      using case when uniform then rows
                 else (select pg_catalog.jsonb_agg(e.value order by e.position)
                         from pg_catalog.jsonb_array_elements(rows) with ordinality as e(value, position)
                        where array(select k from pg_catalog.jsonb_object_keys(e.value) as k order by k) = shape_keys) end;
    get diagnostics affected = row_count;
    inserted := inserted + affected;
  end loop;
  return inserted;
end
$$;
comment on function steward.batch_insert(regclass, jsonb, text) is
  'Inserts a JSON array of objects (at most 10000, keys = column names) into target in one statement and returns how many rows it inserted; all or nothing. on_conflict: error (a conflict fails the batch) or ignore (ON CONFLICT DO NOTHING: conflicting rows are skipped and not counted). A key a row leaves out gets the column default. Unknown keys are an error naming them. SECURITY INVOKER: the caller''s privileges, row-level security and triggers apply.';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function steward.batch_insert(regclass, jsonb, text) to steward_client;
