--! Previous: sha1:fcd122ba50178d46e9d801f84076caff776d831a
--! Hash: sha1:f56a2e958d81cfa4a2b65253d2efc2079f6eb62e
--! Message: pagination

-- Keyset pagination over any table the caller may read (steward.page), for clients.
--
-- page is SECURITY INVOKER: the caller's privileges, row-level security and
-- triggers apply to the target exactly as in the caller's own statements. It deliberately does
-- not pin search_path, because a pinned path would also apply to the target's triggers and to the
-- functions its policies call, and break those that use unqualified names. Instead everything
-- it generates is qualified: the table, pg_catalog functions, each value's type, and each
-- comparison operator (taken from the column type's default btree operator class, so the
-- comparison is the one ORDER BY uses and cannot be shadowed by an operator of the same name in
-- the caller's search_path).

-- Plans: what page checks and builds once per table, order and filter shape ----------------------
--
-- Checking the identifiers and looking up each column's type and btree operators are catalog
-- work that gives the same answer on every call until the table changes, so it is done once and
-- kept in steward.page_plans, with a stamp of the catalog rows it depends on. The plans are
-- built and stored by a SECURITY DEFINER function from the catalogs alone: a caller cannot write
-- a plan (its SQL runs in other callers' sessions, and in SECURITY DEFINER functions that page).

create unlogged table steward.page_plans (
  relation oid not null,
  order_by text[] not null,
  filter_shape jsonb not null,
  stamp text not null,
  type_oids oid[] not null,
  names text[] not null,
  order_text text not null,
  first_sql text not null,
  after_sql text not null,
  built_at timestamptz not null default pg_catalog.now(),
  primary key (relation, order_by, filter_shape)
);
comment on table steward.page_plans is
  'What steward.page checked and built for one table, order_by and filter shape ({column: is the value null}): the column names, the order as the cursor binds it, and the two statements (first page, after a cursor). Valid while stamp matches the catalog (steward.page_stamp); rebuilt otherwise. Unlogged: a cache, empty after a crash. Safe to truncate.';

create function steward.page_stamp(relation oid, type_oids oid[])
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  -- Every catalog row a plan depends on, by its version (xmin, ctid: a changed row is a new row
  -- version, an in-place statistics update is not): the table (name), its schema (name), its
  -- columns (names, types, NOT NULL), its indexes (the unique one), the types of the used columns
  -- down their domain chains (a domain's NOT NULL).
  select pg_catalog.concat_ws('/', c.xmin, c.ctid, n.xmin, n.ctid,
           (select pg_catalog.string_agg(a.xmin || ',' || a.ctid, ' ' order by a.attnum)
              from pg_catalog.pg_attribute a where a.attrelid = c.oid and a.attnum > 0),
           (select pg_catalog.string_agg(x.xmin || ',' || x.ctid, ' ' order by x.indexrelid)
              from pg_catalog.pg_index x where x.indrelid = c.oid),
           (select pg_catalog.string_agg(t.xmin || ',' || t.ctid, ' ' order by t.oid)
              from pg_catalog.pg_type t where t.oid = any (page_stamp.type_oids)))
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.oid = page_stamp.relation
$$;
comment on function steward.page_stamp(oid, oid[]) is
  'The versions of the catalog rows a page plan depends on (the table, its schema, columns, indexes and the used columns'' types); a plan whose stamp differs is rebuilt. Does not cover a change of a type''s default btree operator class.';

create function steward.page_plan(target regclass, order_by text[], filter_shape jsonb)
returns steward.page_plans
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  plan steward.page_plans;
  relation record;
  item text;
  parts text[];
  names text[] := '{}';
  descending boolean[] := '{}';
  described jsonb;
  type_oids oid[];
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
  select_sql text;
  i integer;
begin
  -- The hot path: one statement, the plan and its stamp checked together.
  select p.* into plan
    from steward.page_plans p
   where p.relation = target and p.order_by = page_plan.order_by and p.filter_shape = page_plan.filter_shape
     and p.stamp = steward.page_stamp(target, p.type_oids);
  if found then
    return plan;
  end if;

  select n.nspname, c.relname, c.relkind,
         array(select a.attname::text from pg_catalog.pg_attribute a
                where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as columns,
         array(select k from pg_catalog.jsonb_object_keys(filter_shape) as k order by k) as filter_keys
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
         (select pg_catalog.array_agg(distinct d.oid) from base d),
         exists (
           select from pg_catalog.pg_index x
            where x.indrelid = target and x.indisunique and x.indisvalid
              and x.indpred is null and x.indexprs is null
              and (select pg_catalog.array_agg(k.attnum)
                     from pg_catalog.unnest(x.indkey::smallint[]) with ordinality as k(attnum, position)
                    where k.position <= x.indnkeyatts)
                  <@ (select pg_catalog.array_agg(o.attnum) from used o where o.name = any (names)))
    into described, type_oids, is_unique
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
    if (filter_shape ->> item)::boolean then
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

  -- One row more than asked tells whether there is a next page; $3 is max + 1.
  select_sql := 'select array(select pg_catalog.to_jsonb(t.*) from %I.%I as t where %s order by %s limit $3)';
  plan := row(target::oid, page_plan.order_by, filter_shape,
              steward.page_stamp(target, type_oids), type_oids, names, order_text,
              pg_catalog.format(select_sql, relation.nspname, relation.relname,
                                case when pg_catalog.cardinality(conditions) = 0 then 'true'
                                     else pg_catalog.array_to_string(conditions, ' and ') end, order_sql),
              pg_catalog.format(select_sql, relation.nspname, relation.relname,
                                pg_catalog.array_to_string(conditions || after_sql, ' and '), order_sql),
              pg_catalog.now());
  -- A read-only transaction (a standby) pages all the same, with a plan built for this call.
  if pg_catalog.current_setting('transaction_read_only') = 'off' then
    insert into steward.page_plans values (plan.*)
      on conflict on constraint page_plans_pkey do update
        set stamp = excluded.stamp, type_oids = excluded.type_oids, names = excluded.names,
            order_text = excluded.order_text, first_sql = excluded.first_sql,
            after_sql = excluded.after_sql, built_at = excluded.built_at;
  end if;
  return plan;
end
$$;
comment on function steward.page_plan(regclass, text[], jsonb) is
  'For steward.page: the checked plan of target, order_by and filter shape ({column: is the value null}), from steward.page_plans while its stamp holds, else checked and built from the catalogs (raising 22023 on a bad identifier, a nullable or unordered sort column, or an order that is not unique) and stored. Reads only the catalogs and the plans, never the target.';

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
  filter_shape jsonb := '{}';
  plan steward.page_plans;
  binding text;                 -- what a cursor is bound to: this table, order and filter
  decoded jsonb;
  cursor_keys jsonb;
  cursor_values jsonb := '{}';
  page_rows jsonb[];
  last_key jsonb := '[]';
  next_cursor text;
  i integer;
begin
  -- This function is on the path of every page a client reads, so it sends few statements:
  -- the plan (one lookup while the table is unchanged) and the page itself.
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
  if key_filter <> '{}' then
    select pg_catalog.jsonb_object_agg(e.key, pg_catalog.jsonb_typeof(e.value) = 'null')
      into filter_shape from pg_catalog.jsonb_each(key_filter) as e;
  end if;
  plan := steward.page_plan(target, order_by, filter_shape);

  -- The cursor: base64url of {"k": [order_by values of the last row], "c": checksum}. The
  -- checksum binds it to this table, order and filter, so a cursor of another query (or an edited
  -- one) is refused rather than answered with a wrong page. It is not a secret-keyed MAC: page
  -- runs with the caller's privileges, so a cursor forged anyway only moves the start of a page
  -- within rows the caller may read.
  binding := pg_catalog.concat_ws(E'\n', 'steward.page/1', target::oid::text, plan.order_text, key_filter::text);
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
       or pg_catalog.jsonb_array_length(cursor_keys) <> pg_catalog.cardinality(plan.names)
       or (decoded ->> 'c') is distinct from pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
            pg_catalog.convert_to(binding || E'\n' || cursor_keys::text, 'UTF8')), 'hex'), 32) then
      raise exception 'page: after is not a cursor of this query (another table, order_by or filter, or altered)'
        using errcode = '22023',
              hint = 'Pass the "next" of the previous page unchanged, with the same target, order_by and filter; null starts at the first page.';
    end if;
    for i in 1 .. pg_catalog.cardinality(plan.names) loop
      cursor_values := cursor_values || pg_catalog.jsonb_build_object(plan.names[i], cursor_keys -> (i - 1));
    end loop;
    execute plan.after_sql using cursor_values, key_filter, page.max + 1 into page_rows;
  else
    execute plan.first_sql using cursor_values, key_filter, page.max + 1 into page_rows;
  end if;

  if pg_catalog.cardinality(page_rows) > page.max then
    -- The cursor holds the order_by values of the last row returned, as to_jsonb wrote them.
    for i in 1 .. pg_catalog.cardinality(plan.names) loop
      last_key := last_key || pg_catalog.jsonb_build_array(page_rows[page.max] -> plan.names[i]);
    end loop;
    next_cursor := pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
      pg_catalog.jsonb_build_object('k', last_key, 'c', pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
        pg_catalog.convert_to(binding || E'\n' || last_key::text, 'UTF8')), 'hex'), 32))::text,
      'UTF8'), 'base64'), E'+/\n', '-_'), '=');
    page_rows := page_rows[1:page.max];
  end if;
  return pg_catalog.jsonb_build_object('rows', pg_catalog.to_jsonb(page_rows), 'next', next_cursor);
end
$$;
comment on function steward.page(regclass, text[], text, integer, jsonb) is
  'Keyset pagination: up to max (1 to 1000) rows of target as JSON objects in order_by order, after the cursor after (null: from the start), and next, the cursor of the following page (null on the last). order_by: NOT NULL column names with optional asc/desc whose columns include a unique index''s; filter: {column: value} equality (null: IS NULL). SECURITY INVOKER: the caller''s privileges and row-level security apply. A cursor of another table, order or filter is an error (22023).';

revoke all on all functions in schema steward from public;
revoke all on all tables in schema steward from public;
grant execute on function steward.page(regclass, text[], text, integer, jsonb) to steward_client;
-- page (SECURITY INVOKER) runs as its caller and asks page_plan for the plan.
grant execute on function steward.page_plan(regclass, text[], jsonb) to steward_client;
