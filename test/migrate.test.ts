import { randomBytes } from "node:crypto";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { withDatabase } from "../src/embedded.ts";
import { migrate } from "../src/migrate.ts";
import { adminUrl, testLogger, useTestDatabase, withAdmin } from "./helpers.ts";

const context = useTestDatabase();

/** Everything migrate could change: objects of our schemas, their privileges, applied migrations. */
async function catalogSnapshot(pool: pg.Pool) {
  const { rows } = await pool.query(`
    select 'object' as kind, n.nspname || '.' || c.relname || ':' || c.relkind::text as name, c.relacl::text as acl
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('steward', 'graphile_worker', 'graphile_migrate')
    union all
    select 'function', p.oid::regprocedure::text, p.proacl::text
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('steward', 'graphile_worker')
    union all
    select 'migration', filename || ' ' || hash, null from graphile_migrate.migrations
    union all
    select 'worker_migration', id::text, null from graphile_worker.migrations
    order by 1, 2`);
  return rows;
}

describe("steward migrate", () => {
  it("changes nothing when run a second time", async () => {
    const before = await catalogSnapshot(context.db.pool);
    expect(before.some((row) => row.name === "steward.audit_log:r")).toBe(true);
    await migrate(context.db.url, testLogger());
    expect(await catalogSnapshot(context.db.pool)).toEqual(before);
  });

  it("installs as a database owner that is not a superuser and cannot create roles", async () => {
    const suffix = randomBytes(4).toString("hex");
    const owner = `steward_owner_${suffix}`;
    const database = `steward_owned_${suffix}`;
    const password = randomBytes(12).toString("hex");
    await withAdmin(async (admin) => {
      await admin.query(`create role ${owner} login nosuperuser nocreaterole nocreatedb password '${password}'`);
      await admin.query(`create database ${database} owner ${owner}`);
    });
    try {
      const url = new URL(withDatabase(adminUrl(), database));
      url.username = owner;
      url.password = password;
      await migrate(url.toString(), testLogger());
      await migrate(url.toString(), testLogger());
      const client = new pg.Client({ connectionString: url.toString() });
      await client.connect();
      try {
        const { rows } = await client.query(`
          select (select rolsuper from pg_roles where rolname = current_user) as superuser,
                 (select nspowner::regrole::text from pg_namespace where nspname = 'steward') as steward_owner,
                 (select nspowner::regrole::text from pg_namespace where nspname = 'graphile_worker') as worker_owner,
                 (select count(*)::int from graphile_migrate.migrations) as applied`);
        expect(rows[0]).toEqual({
          superuser: false,
          steward_owner: owner,
          worker_owner: owner,
          applied: expect.any(Number),
        });
        expect(rows[0].applied).toBeGreaterThan(0);
      } finally {
        await client.end();
      }
    } finally {
      await withAdmin(async (admin) => {
        await admin.query(`drop database if exists ${database} with (force)`);
        await admin.query(`drop role if exists ${owner}`);
      });
    }
  });
});

describe("privileges", () => {
  it("leaves no steward function executable by PUBLIC", async () => {
    const { rows } = await context.db.pool.query(`
      select p.oid::regprocedure::text as function
        from pg_proc p
       where p.pronamespace = 'steward'::regnamespace
         and (p.proacl is null
              or exists (select from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE'))`);
    expect(rows).toEqual([]);
  });

  it("pins search_path on every SECURITY DEFINER function", async () => {
    const { rows } = await context.db.pool.query(`
      select p.oid::regprocedure::text as function
        from pg_proc p
       where p.pronamespace = 'steward'::regnamespace and p.prosecdef
         and not exists (select from unnest(p.proconfig) c where c like 'search_path=%')`);
    expect(rows).toEqual([]);
  });

  it("gives steward_client usage of the schema and no table", async () => {
    const { rows } = await context.db.pool.query(`
      select has_schema_privilege('steward_client', 'steward', 'usage') as usage,
             (select count(*)::int from pg_class c
               where c.relnamespace = 'steward'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S')
                 and (has_table_privilege('steward_client', c.oid, 'select,insert,update,delete')
                      or has_table_privilege('public', c.oid, 'select,insert,update,delete'))) as readable`);
    expect(rows[0]).toEqual({ usage: true, readable: 0 });
  });
});

/**
 * Columns (of tables, views, composite types), function outputs and arguments of `schema` named
 * with an SQL keyword that must be quoted there. A column or output named with a reserved keyword
 * (catcode R: check, user, order) or a type/function-name keyword (T: concurrently, verbose) must
 * be quoted in every query a DBA writes: the grammar admits neither as a bare column reference.
 * An input argument may be a T word (named notation takes it: `concurrently => false`), not an R word.
 */
async function namesNeedingQuotes(db: pg.Pool | pg.PoolClient, schema: string): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `with keywords as (select word, catcode from pg_get_keywords() where catcode in ('R', 'T'))
     select pg_describe_object('pg_class'::regclass, c.oid, a.attnum) as name
       from pg_class c
       join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
       join keywords k on k.word = a.attname
      where c.relnamespace = $1::regnamespace
     union all
     select format('%s %s %s', p.oid::regprocedure, case when arg.mode in ('o', 't') then 'output' else 'argument' end, arg.name)
       from pg_proc p
      cross join lateral unnest(p.proargnames,
                                coalesce(p.proargmodes::text[], array_fill('i'::text, array[coalesce(cardinality(p.proargnames), 0)])))
            as arg(name, mode)
       join keywords k on k.word = arg.name
      where p.pronamespace = $1::regnamespace
        and (k.catcode = 'R' or arg.mode in ('o', 't', 'b'))
      order by 1`,
    [schema],
  );
  return rows.map((row) => row.name);
}

describe("names", () => {
  it("names no steward column, view column or function output or argument with an SQL keyword that needs quoting", async () => {
    expect(await namesNeedingQuotes(context.db.pool, "steward")).toEqual([]);
  });

  it("the check finds such a column, output or argument, and lets an argument be a type/function-name keyword", async () => {
    const client = await context.db.pool.connect();
    try {
      await client.query("begin");
      await client.query("create schema naming_probe");
      await client.query('create table naming_probe.t ("check" int, "concurrently" bool, fine int)');
      await client.query('create view naming_probe.v as select 1 as "user"');
      await client.query(
        `create function naming_probe.f("order" int, concurrently bool) returns table ("verbose" text) language sql as 'select null::text'`,
      );
      expect(await namesNeedingQuotes(client, "naming_probe")).toEqual([
        "column check of table naming_probe.t",
        "column concurrently of table naming_probe.t",
        "column user of view naming_probe.v",
        "naming_probe.f(integer,boolean) argument order",
        "naming_probe.f(integer,boolean) output verbose",
      ]);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});
