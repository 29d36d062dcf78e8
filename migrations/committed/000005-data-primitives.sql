--! Previous: sha1:5c4a6a2a84d97ae95eecc31d813a07e126ca02c0
--! Hash: sha1:28ec72760d69d435df3671d4668b96698b240dbb
--! Message: pagination, batch insert and request metrics

-- Data primitives for clients: keyset pagination over any table the caller may read
-- (steward.page) and batch insert of a JSON array (steward.batch_insert).
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
  relation record;
  table_columns text[];
  item text;
  parts text[];
  names text[] := '{}';
  descending boolean[] := '{}';
  key_filter jsonb := coalesce(page.filter, '{}'::jsonb);
  filter_keys text[];
  described jsonb;
  described_column jsonb;
  operators jsonb;
  attnums smallint[] := '{}';
  greater text[] := '{}';       -- per order column: "comes after" (> ascending, < descending)
  greater_equal text[] := '{}';
  equal text[] := '{}';
  bound text[] := '{}';         -- per order column: the cursor's value as the column's type
  conditions text[] := '{}';
  after_sql text;
  order_sql text;
  binding text;                 -- what a cursor is bound to: this table, order and filter
  decoded jsonb;
  cursor_keys jsonb;
  cursor_values jsonb;
  page_rows jsonb;
  last_key jsonb;
  fetched bigint;
  next_cursor text;
  i integer;
begin
  if page.max is null or page.max < 1 or page.max > 1000 then
    raise exception 'page: max must be from 1 to 1000, got %', coalesce(page.max::text, 'null')
      using errcode = '22023', hint = 'Ask for at most 1000 rows and follow "next" for the rest.';
  end if;
  if target is null then
    raise exception 'page: target must name a table, got null' using errcode = '22004';
  end if;
  select n.nspname, c.relname, c.relkind into relation
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
  if order_by is null or pg_catalog.cardinality(order_by) = 0 then
    raise exception 'page: order_by must name at least one column' using errcode = '22023',
      hint = 'For example {"created_at desc", id}: the last columns must make the order unique.';
  end if;
  if pg_catalog.jsonb_typeof(key_filter) <> 'object' then
    raise exception 'page: filter must be a JSON object of column: value, got %', pg_catalog.jsonb_typeof(key_filter)
      using errcode = '22023', hint = 'For example {"user_id": 42, "deleted_at": null}.';
  end if;

  -- Identifiers are matched exactly against the table's columns; anything else is refused
  -- before any SQL is built. An order_by item is a column name, optionally followed by asc/desc.
  select pg_catalog.array_agg(a.attname::text) into table_columns
    from pg_catalog.pg_attribute a
   where a.attrelid = target and a.attnum > 0 and not a.attisdropped;
  foreach item in array order_by loop
    if item is null then
      raise exception 'page: order_by items cannot be null' using errcode = '22004';
    end if;
    parts := case when item = any (table_columns) then array[item, 'asc']
                  else pg_catalog.regexp_match(item, '^(.*\S)\s+(asc|desc)\s*$', 'i') end;
    if parts is null or not parts[1] = any (table_columns) then
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
  select pg_catalog.array_agg(k order by k) into filter_keys from pg_catalog.jsonb_object_keys(key_filter) as k;
  filter_keys := coalesce(filter_keys, '{}');
  item := (select k from pg_catalog.unnest(filter_keys) as k where not k = any (table_columns) limit 1);
  if item is not null then
    raise exception 'page: filter key "%" is not a column of %.%', item, relation.nspname, relation.relname
      using errcode = '22023';
  end if;

  -- For each column used: its type (qualified, to cast bound values) and the btree strategy
  -- operators (1 <, 2 <=, 3 =, 4 >=, 5 >) of its type's default operator class, the ones ORDER BY
  -- uses; domains resolve to their base type (and a NOT NULL domain makes the column NOT NULL).
  with recursive used as (
    select a.attname::text as name, a.attnum, a.attnotnull, a.atttypid,
           pg_catalog.format('%I.%I', tn.nspname, ty.typname) as type_sql
      from pg_catalog.pg_attribute a
      join pg_catalog.pg_type ty on ty.oid = a.atttypid
      join pg_catalog.pg_namespace tn on tn.oid = ty.typnamespace
     where a.attrelid = target and a.attnum > 0 and not a.attisdropped
       and a.attname::text = any (names || filter_keys)
  ), base as (
    select u.name, ty.oid, ty.typtype, ty.typcategory, ty.typbasetype, ty.typnotnull
      from used u join pg_catalog.pg_type ty on ty.oid = u.atttypid
    union all
    select b.name, ty.oid, ty.typtype, ty.typcategory, ty.typbasetype, ty.typnotnull
      from base b join pg_catalog.pg_type ty on ty.oid = b.typbasetype
     where b.typtype = 'd'
  )
  select pg_catalog.jsonb_object_agg(u.name, pg_catalog.jsonb_build_object(
           'attnum', u.attnum, 'type', u.type_sql,
           'not_null', u.attnotnull or exists (select from base d where d.name = u.name and d.typnotnull),
           'type_name', pg_catalog.format_type(u.atttypid, null), 'operators', ops.operators))
    into described
    from used u
    join base b on b.name = u.name and b.typtype <> 'd'
    left join lateral (
      select pg_catalog.jsonb_object_agg(o.amopstrategy::text, pg_catalog.format('OPERATOR(%I.%s)', opn.nspname, op.oprname)) as operators
        from (select oc.opcfamily, oc.opcintype
                from pg_catalog.pg_opclass oc
                join pg_catalog.pg_am am on am.oid = oc.opcmethod
               where am.amname = 'btree' and oc.opcdefault
                 and oc.opcintype = any (
                       array[b.oid, case when b.typtype = 'e' then 'pg_catalog.anyenum'::pg_catalog.regtype
                                         when b.typtype = 'r' then 'pg_catalog.anyrange'::pg_catalog.regtype
                                         when b.typtype = 'm' then 'pg_catalog.anymultirange'::pg_catalog.regtype
                                         when b.typtype = 'c' then 'pg_catalog.record'::pg_catalog.regtype
                                         when b.typcategory = 'A' then 'pg_catalog.anyarray'::pg_catalog.regtype end]
                       || array(select c.casttarget from pg_catalog.pg_cast c
                                 where c.castsource = b.oid and c.castmethod = 'b'))
               order by oc.opcintype = b.oid desc, oc.oid
               limit 1) as opc
        join pg_catalog.pg_amop o
          on o.amopfamily = opc.opcfamily and o.amoplefttype = opc.opcintype and o.amoprighttype = opc.opcintype
        join pg_catalog.pg_operator op on op.oid = o.amopopr
        join pg_catalog.pg_namespace opn on opn.oid = op.oprnamespace
       where o.amopstrategy between 1 and 5
    ) as ops on true;

  for i in 1 .. pg_catalog.cardinality(names) loop
    described_column := described -> names[i];
    operators := described_column -> 'operators';
    if not (described_column ->> 'not_null')::boolean then
      raise exception 'page: cannot order by "%": it may be null', names[i]
        using errcode = '22023',
              hint = 'Keyset pages order by NOT NULL columns only, so that every page is one index range and no row is skipped: add a NOT NULL constraint, or order by a NOT NULL generated column.';
    end if;
    if operators is null or (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(operators)) <> 5 then
      raise exception 'page: cannot order by "%": type % has no default btree ordering', names[i], described_column ->> 'type_name'
        using errcode = '22023';
    end if;
    attnums := attnums || (described_column ->> 'attnum')::smallint;
    greater := greater || (operators ->> case when descending[i] then '1' else '5' end);
    greater_equal := greater_equal || (operators ->> case when descending[i] then '2' else '4' end);
    equal := equal || (operators ->> '3');
    bound := bound || pg_catalog.format('(select x.%1$I from pg_catalog.jsonb_to_record($1) as x(%1$I %2$s))',
                                        names[i], described_column ->> 'type');
  end loop;

  if not exists (
    select from pg_catalog.pg_index x
     where x.indrelid = target and x.indisunique and x.indisvalid
       and x.indpred is null and x.indexprs is null
       and (select pg_catalog.array_agg(k.attnum)
              from pg_catalog.unnest(x.indkey::smallint[]) with ordinality as k(attnum, position)
             where k.position <= x.indnkeyatts) <@ attnums
  ) then
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
  foreach item in array filter_keys loop
    described_column := described -> item;
    if pg_catalog.jsonb_typeof(key_filter -> item) = 'null' then
      conditions := conditions || pg_catalog.format('t.%I is null', item);
    elsif described_column #> '{operators,3}' is null then
      raise exception 'page: cannot filter on "%": type % has no default btree equality', item, described_column ->> 'type_name'
        using errcode = '22023';
    else
      conditions := conditions || pg_catalog.format(
        't.%1$I %3$s (select x.%1$I from pg_catalog.jsonb_to_record($2) as x(%1$I %2$s))',
        item, described_column ->> 'type', described_column #>> '{operators,3}');
    end if;
  end loop;

  order_sql := (select pg_catalog.string_agg(pg_catalog.format('t.%I', names[n]) || case when descending[n] then ' desc' else '' end, ', ' order by n)
                  from pg_catalog.generate_subscripts(names, 1) as n);
  binding := pg_catalog.concat_ws(E'\n', 'steward.page/1', target::oid::text,
    (select pg_catalog.string_agg(pg_catalog.quote_ident(names[n]) || case when descending[n] then ' desc' else ' asc' end, ',' order by n)
       from pg_catalog.generate_subscripts(names, 1) as n),
    key_filter::text);

  -- The cursor: base64url of {"k": [order_by values of the last row], "c": checksum}. The
  -- checksum binds it to this table, order and filter, so a cursor of another query (or an edited
  -- one) is refused rather than answered with a wrong page. It is not a secret-keyed MAC: page
  -- runs with the caller's privileges, so a cursor forged anyway only moves the start of a page
  -- within rows the caller may read.
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
    cursor_values := (select pg_catalog.jsonb_object_agg(names[n], cursor_keys -> (n - 1))
                        from pg_catalog.generate_subscripts(names, 1) as n);

    -- Rows after the cursor. One direction: a row comparison, a single index range. Mixed
    -- directions cannot use one (FACTS): the expanded a > x or (a = x and b < y), with a
    -- redundant a >= x in front so that the index still bounds the scan.
    if pg_catalog.cardinality(names) = 1 then
      after_sql := pg_catalog.format('t.%I %s %s', names[1], greater[1], bound[1]);
    elsif (select pg_catalog.count(distinct g) from pg_catalog.unnest(greater) as g) = 1 then
      after_sql := pg_catalog.format('row(%s) %s row(%s)',
        (select pg_catalog.string_agg(pg_catalog.format('t.%I', n), ', ' order by o)
           from pg_catalog.unnest(names) with ordinality as u(n, o)),
        greater[1], pg_catalog.array_to_string(bound, ', '));
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

  -- One row more than asked tells whether there is a next page.
  execute pg_catalog.format(
    'select coalesce(pg_catalog.jsonb_agg(q.r order by q.n) filter (where q.n <= $3), ''[]''::jsonb),
            (pg_catalog.array_agg(q.k) filter (where q.n = $3))[1],
            pg_catalog.count(*)
       from (select pg_catalog.to_jsonb(t.*) as r,
                    pg_catalog.jsonb_build_array(%1$s) as k,
                    pg_catalog.row_number() over (order by %2$s) as n
               from %3$I.%4$I as t
              where %5$s
              order by %2$s
              limit $4) as q',
    (select pg_catalog.string_agg(pg_catalog.format('t.%I', n), ', ' order by o)
       from pg_catalog.unnest(names) with ordinality as u(n, o)),
    order_sql, relation.nspname, relation.relname,
    case when pg_catalog.cardinality(conditions) = 0 then 'true' else pg_catalog.array_to_string(conditions, ' and ') end)
    into page_rows, last_key, fetched
    using cursor_values, key_filter, page.max, page.max + 1;

  if fetched > page.max then
    next_cursor := pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
      pg_catalog.jsonb_build_object('k', last_key, 'c', pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
        pg_catalog.convert_to(binding || E'\n' || last_key::text, 'UTF8')), 'hex'), 32))::text,
      'UTF8'), 'base64'), E'+/\n', '-_'), '=');
  end if;
  return pg_catalog.jsonb_build_object('rows', page_rows, 'next', next_cursor);
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

-- Privileges -----------------------------------------------------------------------------------

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function steward.page(regclass, text[], text, integer, jsonb) to steward_client;
grant execute on function steward.batch_insert(regclass, jsonb, text) to steward_client;
