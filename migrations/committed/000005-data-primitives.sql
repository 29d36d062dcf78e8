--! Previous: sha1:8d588f86ec8d1eaf4dc2762ab3b9402d958bde8c
--! Hash: sha1:0f494cbbcbbfc6ada0ceb3e1c1759825321919ef
--! Message: pagination, batch insert and request metrics

-- Data primitives for clients: keyset pagination over any table the caller may read
-- (steward.page), batch insert of a JSON array (steward.batch_insert), and request metrics: raw
-- rows recorded by clients (steward.record_requests) into daily partitions, rolled up by the
-- rollup_requests task into 5-minute and hourly stats.
--
-- page and batch_insert are SECURITY INVOKER: the caller's privileges, row-level security and
-- triggers apply to the target exactly as in the caller's own statements. They deliberately do
-- not pin search_path, because a pinned path would also apply to the target's triggers and to the
-- functions its policies call, and break those that use unqualified names. Instead everything
-- they generate is qualified: the table, pg_catalog functions, each value's type, and each
-- comparison operator (taken from the column type's default btree operator class, so the
-- comparison is the one ORDER BY uses and cannot be shadowed by an operator of the same name in
-- the caller's search_path).

-- Keyset pagination ----------------------------------------------------------------------------

create function steward.page(
  target regclass,
  order_by text[],
  after text default null,
  max integer default 50,
  filter jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
stable
security invoker
as $$
declare
  key_filter jsonb := coalesce(page.filter, '{}'::jsonb);
  relation record;
  item text;
  parts text[];
  names text[] := '{}';
  descending boolean[] := '{}';
  described jsonb;
  is_unique boolean;
  column_info jsonb;
  greater text[] := '{}';       -- per order column: "comes after" (> ascending, < descending)
  greater_equal text[] := '{}';
  equal text[] := '{}';
  bound text[] := '{}';         -- per order column: the cursor's value, typed like the column
  one_operator text;            -- the "comes after" operator, when all columns share it
  column_list text := '';
  order_sql text := '';
  order_text text := '';
  conditions text[] := '{}';
  after_sql text;
  binding text;                 -- what a cursor is bound to: this table, order and filter
  decoded jsonb;
  cursor_keys jsonb;
  cursor_values jsonb := '{}';
  row_json jsonb;
  page_rows jsonb[] := '{}';
  last_key jsonb := '[]';
  next_cursor text;
  i integer;
begin
  -- This function is on the path of every page a client reads, so it sends few statements:
  -- two catalog lookups and the page itself; the rest are plain expressions.
  if page.max is null or page.max < 1 or page.max > 1000 then
    raise exception 'page: max must be from 1 to 1000, got %', coalesce(page.max::text, 'null')
      using errcode = '22023', hint = 'Ask for at most 1000 rows and follow "next" for the rest.';
  end if;
  if target is null then
    raise exception 'page: target must name a table, got null' using errcode = '22004';
  end if;
  if order_by is null or pg_catalog.cardinality(order_by) = 0 then
    raise exception 'page: order_by must name at least one column' using errcode = '22023',
      hint = 'For example {"created_at desc", id}: the last columns must make the order unique.';
  end if;
  if pg_catalog.jsonb_typeof(key_filter) <> 'object' then
    raise exception 'page: filter must be a JSON object of column: value, got %', pg_catalog.jsonb_typeof(key_filter)
      using errcode = '22023', hint = 'For example {"user_id": 42, "deleted_at": null}.';
  end if;

  select n.nspname, c.relname, c.relkind,
         array(select a.attname::text from pg_catalog.pg_attribute a
                where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as columns,
         array(select k from pg_catalog.jsonb_object_keys(key_filter) as k order by k) as filter_keys
    into relation
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.oid = target;
  if not found then
    raise exception 'page: no relation has oid %', target::oid using errcode = '22023';
  end if;
  if relation.relkind not in ('r', 'p') then
    raise exception 'page: %.% is not a table', relation.nspname, relation.relname
      using errcode = '22023',
            hint = 'Keyset pages need NOT NULL sort columns and a unique index, which only tables have; page over the underlying table.';
  end if;

  -- Identifiers are matched exactly against the table's columns; anything else is refused
  -- before any SQL is built. An order_by item is a column name, optionally followed by asc/desc.
  foreach item in array order_by loop
    if item is null then
      raise exception 'page: order_by items cannot be null' using errcode = '22004';
    end if;
    parts := case when item = any (relation.columns) then array[item, 'asc']
                  else pg_catalog.regexp_match(item, '^(.*\S)\s+(asc|desc)\s*$', 'i') end;
    if parts is null or not parts[1] = any (relation.columns) then
      raise exception 'page: order_by item "%" is not a column of %.%', item, relation.nspname, relation.relname
        using errcode = '22023',
              hint = 'Items are column names exactly as stored (case matters), optionally followed by asc or desc.';
    end if;
    if parts[1] = any (names) then
      raise exception 'page: order_by names column "%" twice', parts[1] using errcode = '22023';
    end if;
    names := names || parts[1];
    descending := descending || (pg_catalog.lower(parts[2]) = 'desc');
  end loop;
  foreach item in array relation.filter_keys loop
    if not item = any (relation.columns) then
      raise exception 'page: filter key "%" is not a column of %.%', item, relation.nspname, relation.relname
        using errcode = '22023';
    end if;
  end loop;

  -- For each column used: whether it is NOT NULL (itself or by its domain), its type (qualified,
  -- to type bound values), and the btree strategy operators (1 <, 2 <=, 3 =, 4 >=, 5 >) of its
  -- type's default operator class, the ones ORDER BY uses. And whether a valid unique index on
  -- plain columns has all its key columns among the order_by columns.
  with recursive used as (
    select a.attname::text as name, a.attnum, a.attnotnull, a.atttypid,
           pg_catalog.format('%I.%I', tn.nspname, ty.typname) as type_sql
      from pg_catalog.pg_attribute a
      join pg_catalog.pg_type ty on ty.oid = a.atttypid
      join pg_catalog.pg_namespace tn on tn.oid = ty.typnamespace
     where a.attrelid = target and a.attnum > 0 and not a.attisdropped
       and a.attname::text = any (names || relation.filter_keys)
  ), base as (
    select u.name, ty.oid, ty.typtype, ty.typcategory, ty.typbasetype, ty.typnotnull
      from used u join pg_catalog.pg_type ty on ty.oid = u.atttypid
    union all
    select b.name, ty.oid, ty.typtype, ty.typcategory, ty.typbasetype, ty.typnotnull
      from base b join pg_catalog.pg_type ty on ty.oid = b.typbasetype
     where b.typtype = 'd'
  )
  select pg_catalog.jsonb_object_agg(u.name, pg_catalog.jsonb_build_object(
           'type', u.type_sql,
           'type_name', pg_catalog.format_type(u.atttypid, null),
           'not_null', u.attnotnull or exists (select from base d where d.name = u.name and d.typnotnull),
           'operators', ops.operators)),
         exists (
           select from pg_catalog.pg_index x
            where x.indrelid = target and x.indisunique and x.indisvalid
              and x.indpred is null and x.indexprs is null
              and (select pg_catalog.array_agg(k.attnum)
                     from pg_catalog.unnest(x.indkey::smallint[]) with ordinality as k(attnum, position)
                    where k.position <= x.indnkeyatts)
                  <@ (select pg_catalog.array_agg(o.attnum) from used o where o.name = any (names)))
    into described, is_unique
    from used u
    join base b on b.name = u.name and b.typtype <> 'd'
    left join lateral (
      select pg_catalog.jsonb_object_agg(o.amopstrategy::text, pg_catalog.format('OPERATOR(%I.%s)', opn.nspname, op.oprname)) as operators
        -- The default btree operator class for the type itself, else for what it is binary
        -- coercible to (varchar: text) or for its polymorphic kind (enums, arrays, ranges, rows).
        -- 403 is btree's access method OID, fixed in every PostgreSQL.
        from (select * from (select oc.opcfamily, oc.opcintype
                               from pg_catalog.pg_opclass oc
                              where oc.opcmethod = 403 and oc.opcdefault and oc.opcintype = b.oid) as exact
              union all
              (select oc.opcfamily, oc.opcintype
                 from pg_catalog.pg_opclass oc
                where oc.opcmethod = 403 and oc.opcdefault
                  and (oc.opcintype = case when b.typtype = 'e' then 'pg_catalog.anyenum'::pg_catalog.regtype
                                           when b.typtype = 'r' then 'pg_catalog.anyrange'::pg_catalog.regtype
                                           when b.typtype = 'm' then 'pg_catalog.anymultirange'::pg_catalog.regtype
                                           when b.typtype = 'c' then 'pg_catalog.record'::pg_catalog.regtype
                                           when b.typcategory = 'A' then 'pg_catalog.anyarray'::pg_catalog.regtype end
                       or oc.opcintype in (select c.casttarget from pg_catalog.pg_cast c
                                            where c.castsource = b.oid and c.castmethod = 'b'))
                order by oc.oid)
              limit 1) as opc
        join pg_catalog.pg_amop o
          on o.amopfamily = opc.opcfamily and o.amoplefttype = opc.opcintype and o.amoprighttype = opc.opcintype
        join pg_catalog.pg_operator op on op.oid = o.amopopr
        join pg_catalog.pg_namespace opn on opn.oid = op.oprnamespace
       where o.amopstrategy between 1 and 5
    ) as ops on true;

  for i in 1 .. pg_catalog.cardinality(names) loop
    column_info := described -> names[i];
    if not (column_info ->> 'not_null')::boolean then
      raise exception 'page: cannot order by "%": it may be null', names[i]
        using errcode = '22023',
              hint = 'Keyset pages order by NOT NULL columns only, so that every page is one index range and no row is skipped: add a NOT NULL constraint, or order by a NOT NULL generated column.';
    end if;
    if not coalesce(column_info -> 'operators' ?& array['1', '2', '3', '4', '5'], false) then
      raise exception 'page: cannot order by "%": type % has no default btree ordering', names[i], column_info ->> 'type_name'
        using errcode = '22023';
    end if;
    greater := greater || (column_info -> 'operators' ->> case when descending[i] then '1' else '5' end);
    greater_equal := greater_equal || (column_info -> 'operators' ->> case when descending[i] then '2' else '4' end);
    equal := equal || (column_info -> 'operators' ->> '3');
    bound := bound || pg_catalog.format('(select x.%1$I from pg_catalog.jsonb_to_record($1) as x(%1$I %2$s))',
                                        names[i], column_info ->> 'type');
    one_operator := case when i = 1 or one_operator = greater[i] then greater[i] end;
    column_list := column_list || case when i > 1 then ', ' else '' end || pg_catalog.format('t.%I', names[i]);
    order_sql := order_sql || case when i > 1 then ', ' else '' end
                 || pg_catalog.format('t.%I', names[i]) || case when descending[i] then ' desc' else '' end;
    order_text := order_text || case when i > 1 then ',' else '' end
                  || pg_catalog.quote_ident(names[i]) || case when descending[i] then ' desc' else ' asc' end;
  end loop;
  if not is_unique then
    raise exception 'page: order_by % does not make the order unique', order_by
      using errcode = '22023',
            hint = coalesce(
              'End order_by with the primary key (' || (
                select pg_catalog.string_agg(a.attname::text, ', ' order by k.position)
                  from pg_catalog.pg_index x
                  cross join pg_catalog.unnest(x.indkey::smallint[]) with ordinality as k(attnum, position)
                  join pg_catalog.pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
                 where x.indrelid = target and x.indisprimary) || ') or the columns of another unique index.',
              'Create a primary key or unique index on NOT NULL columns and end order_by with its columns.');
  end if;

  -- filter: equality on columns, the values bound as $2 and typed like the column; null: IS NULL.
  foreach item in array relation.filter_keys loop
    column_info := described -> item;
    if pg_catalog.jsonb_typeof(key_filter -> item) = 'null' then
      conditions := conditions || pg_catalog.format('t.%I is null', item);
    elsif column_info #> '{operators,3}' is null then
      raise exception 'page: cannot filter on "%": type % has no default btree equality', item, column_info ->> 'type_name'
        using errcode = '22023';
    else
      conditions := conditions || pg_catalog.format(
        't.%1$I %3$s (select x.%1$I from pg_catalog.jsonb_to_record($2) as x(%1$I %2$s))',
        item, column_info ->> 'type', column_info #>> '{operators,3}');
    end if;
  end loop;

  -- The cursor: base64url of {"k": [order_by values of the last row], "c": checksum}. The
  -- checksum binds it to this table, order and filter, so a cursor of another query (or an edited
  -- one) is refused rather than answered with a wrong page. It is not a secret-keyed MAC: page
  -- runs with the caller's privileges, so a cursor forged anyway only moves the start of a page
  -- within rows the caller may read.
  binding := pg_catalog.concat_ws(E'\n', 'steward.page/1', target::oid::text, order_text, key_filter::text);
  if after is not null then
    if after ~ '^[A-Za-z0-9_-]+$' and pg_catalog.length(after) <= 16384 then
      begin
        decoded := pg_catalog.convert_from(pg_catalog.decode(
          pg_catalog.translate(after, '-_', '+/') || pg_catalog.repeat('=', (4 - pg_catalog.length(after) % 4) % 4),
          'base64'), 'UTF8')::jsonb;
      exception when data_exception then
        decoded := null;
      end;
    end if;
    cursor_keys := case when pg_catalog.jsonb_typeof(decoded) = 'object' then decoded -> 'k' end;
    if pg_catalog.jsonb_typeof(cursor_keys) is distinct from 'array'
       or pg_catalog.jsonb_array_length(cursor_keys) <> pg_catalog.cardinality(names)
       or (decoded ->> 'c') is distinct from pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
            pg_catalog.convert_to(binding || E'\n' || cursor_keys::text, 'UTF8')), 'hex'), 32) then
      raise exception 'page: after is not a cursor of this query (another table, order_by or filter, or altered)'
        using errcode = '22023',
              hint = 'Pass the "next" of the previous page unchanged, with the same target, order_by and filter; null starts at the first page.';
    end if;
    for i in 1 .. pg_catalog.cardinality(names) loop
      cursor_values := cursor_values || pg_catalog.jsonb_build_object(names[i], cursor_keys -> (i - 1));
    end loop;

    -- Rows after the cursor. One direction: a row comparison, a single index range. Mixed
    -- directions cannot use one (FACTS): the expanded a > x or (a = x and b < y), with a
    -- redundant a >= x in front so that the index still bounds the scan.
    if pg_catalog.cardinality(names) = 1 then
      after_sql := pg_catalog.format('t.%I %s %s', names[1], greater[1], bound[1]);
    elsif one_operator is not null then
      after_sql := pg_catalog.format('row(%s) %s row(%s)', column_list, one_operator, pg_catalog.array_to_string(bound, ', '));
    else
      i := pg_catalog.cardinality(names);
      after_sql := pg_catalog.format('t.%I %s %s', names[i], greater[i], bound[i]);
      for i in reverse pg_catalog.cardinality(names) - 1 .. 1 loop
        after_sql := pg_catalog.format('(t.%1$I %2$s %4$s or (t.%1$I %3$s %4$s and %5$s))',
                                       names[i], greater[i], equal[i], bound[i], after_sql);
      end loop;
      after_sql := pg_catalog.format('t.%I %s %s and %s', names[1], greater_equal[1], bound[1], after_sql);
    end if;
    conditions := conditions || after_sql;
  end if;

  -- One row more than asked tells whether there is a next page. Rows arrive in order through
  -- the loop (a plain index scan, cheaper to plan than aggregating in SQL).
  for row_json in execute pg_catalog.format(
      'select pg_catalog.to_jsonb(t.*) from %I.%I as t where %s order by %s limit $3',
      relation.nspname, relation.relname,
      case when pg_catalog.cardinality(conditions) = 0 then 'true' else pg_catalog.array_to_string(conditions, ' and ') end,
      order_sql)
    using cursor_values, key_filter, page.max + 1
  loop
    if pg_catalog.cardinality(page_rows) = page.max then
      -- The cursor holds the order_by values of the last row returned, as to_jsonb wrote them.
      for i in 1 .. pg_catalog.cardinality(names) loop
        last_key := last_key || pg_catalog.jsonb_build_array(page_rows[page.max] -> names[i]);
      end loop;
      next_cursor := pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
        pg_catalog.jsonb_build_object('k', last_key, 'c', pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
          pg_catalog.convert_to(binding || E'\n' || last_key::text, 'UTF8')), 'hex'), 32))::text,
        'UTF8'), 'base64'), E'+/\n', '-_'), '=');
      exit;
    end if;
    page_rows := page_rows || row_json;
  end loop;
  return pg_catalog.jsonb_build_object('rows', pg_catalog.to_jsonb(page_rows), 'next', next_cursor);
end
$$;
comment on function steward.page(regclass, text[], text, integer, jsonb) is
  'Keyset pagination: up to max (1 to 1000) rows of target as JSON objects in order_by order, after the cursor after (null: from the start), and next, the cursor of the following page (null on the last). order_by: NOT NULL column names with optional asc/desc whose columns include a unique index''s; filter: {column: value} equality (null: IS NULL). SECURITY INVOKER: the caller''s privileges and row-level security apply. A cursor of another table, order or filter is an error (22023).';

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

-- Request metrics: settings --------------------------------------------------------------------

insert into steward.settings (name, value, type, description) values
  ('request_metrics.raw_retention', '7 days', 'interval',
   'How long raw request rows (steward.requests) are kept. They are dropped a whole UTC day at a time once the day is older than this; record_requests refuses rows older than this.'),
  ('request_metrics.retention_5m', '30 days', 'interval',
   'How long rows of steward.request_stats_5m are kept.'),
  ('request_metrics.retention_hourly', '400 days', 'interval',
   'How long rows of steward.request_stats_hourly are kept.'),
  ('request_metrics.hourly_refresh', '5 minutes', 'interval',
   'How stale the hourly stats of an hour still in progress may get: such an hour is recomputed at most this often (a closed hour is recomputed on the next rollup after any change).'),
  ('request_metrics.max_clock_skew', '5 minutes', 'interval',
   'How far in the future a recorded request''s at may be; record_requests refuses rows later than that.'),
  ('request_metrics.partitions_ahead', '3', 'integer',
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
  primary key (bucket, endpoint, method)
);
comment on table steward.request_stats_5m is
  'Requests per 5-minute bucket (UTC, start of the bucket), endpoint and method: count, errors (status >= 500), exact percentiles of duration_ms (percentile_cont) and cache hits. Recomputed from the raw rows by the rollup_requests task whenever a bucket gets new rows.';

create table steward.request_stats_hourly (like steward.request_stats_5m including all);
comment on table steward.request_stats_hourly is
  'Requests per hour (UTC, start of the hour), endpoint and method, computed like request_stats_5m from the raw rows (percentiles cannot be combined from 5-minute ones). An hour in progress is refreshed at most every request_metrics.hourly_refresh; a closed hour on the next rollup after a change.';

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
               p50_ms double precision, p95_ms double precision, p99_ms double precision, cache_hits bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- Each bucket's time range is read once, for all of its endpoints and methods; percentiles
  -- are exact (percentile_cont over every duration of the bucket).
  select a.bucket, a.endpoint, a.method, a.requests, a.errors, a.p[1], a.p[2], a.p[3], a.cache_hits
    from (select b.bucket, r.endpoint, r.method,
                 pg_catalog.count(*) as requests,
                 pg_catalog.count(*) filter (where r.status >= 500) as errors,
                 pg_catalog.percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.duration_ms) as p,
                 pg_catalog.count(*) filter (where r.cache_hit) as cache_hits
            from (select distinct k from pg_catalog.unnest(buckets) as k) as b(bucket)
            join steward.requests r on r.at >= b.bucket and r.at < b.bucket + width
           where (b.bucket, r.endpoint, r.method) in (select * from unnest(buckets, endpoints, methods))
           group by b.bucket, r.endpoint, r.method) as a
$$;
comment on function steward.request_stats_of(interval, timestamptz[], text[], text[]) is
  'The stats (requests, errors, exact p50/p95/p99 of duration_ms, cache hits) of the given buckets of the given width, from the raw rows of steward.requests; the three arrays list (bucket start, endpoint, method). Used by rollup_requests.';

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
           p95_ms = excluded.p95_ms, p99_ms = excluded.p99_ms, cache_hits = excluded.cache_hits;

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
           p95_ms = excluded.p95_ms, p99_ms = excluded.p99_ms, cache_hits = excluded.cache_hits;
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
  deleted_hourly bigint := 0;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'cleanup_request_stats: batch_size must be 1 or more, got %', coalesce(batch_size::text, 'null') using errcode = '22023';
  end if;
  delete from steward.request_stats_5m s
   where s.ctid = any (array(select x.ctid from steward.request_stats_5m x
                               where x.bucket < pg_catalog.now() - steward.setting_interval('request_metrics.retention_5m')
                               limit batch_size));
  get diagnostics deleted = row_count;
  if deleted < batch_size then
    delete from steward.request_stats_hourly s
     where s.ctid = any (array(select x.ctid from steward.request_stats_hourly x
                                 where x.bucket < pg_catalog.now() - steward.setting_interval('request_metrics.retention_hourly')
                                 limit batch_size - deleted));
    get diagnostics deleted_hourly = row_count;
  end if;
  return deleted + deleted_hourly;
end
$$;
comment on function steward.cleanup_request_stats(integer) is
  'Cleanup step: deletes at most batch_size rows of request_stats_5m and request_stats_hourly older than their retention settings; returns how many.';

insert into steward.cleanup_steps (name, function, description) values
  ('requests', 'steward.cleanup_requests(integer)',
   'Drops daily partitions of steward.requests older than request_metrics.raw_retention (once rolled up).'),
  ('request_stats', 'steward.cleanup_request_stats(integer)',
   'Deletes request_stats_5m and request_stats_hourly rows older than request_metrics.retention_5m and retention_hourly.')
on conflict (name) do update set function = excluded.function, description = excluded.description;

-- Today and the days ahead exist from the start; the rollup keeps them ahead.
select steward.create_request_partitions((pg_catalog.now() at time zone 'UTC')::date,
                                         (pg_catalog.now() at time zone 'UTC')::date + steward.setting_integer('request_metrics.partitions_ahead'));

-- Privileges -----------------------------------------------------------------------------------

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function steward.page(regclass, text[], text, integer, jsonb) to steward_client;
grant execute on function steward.batch_insert(regclass, jsonb, text) to steward_client;
grant execute on function steward.record_requests(jsonb) to steward_client;
