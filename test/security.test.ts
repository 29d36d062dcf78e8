// The security review, as tests: what a role holding only steward_client can and cannot do,
// hostile strings in every text argument, and search_path attacks.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClientRole, sqlError, type ClientRole } from "./client-role.ts";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let app: ClientRole;

beforeAll(async () => {
  app = await createClientRole(context.db);
  const { pool } = context.db;
  await pool.query("select steward.set_rate_limit('security', 3, '1 hour')");
  await pool.query("create table public.sentinel (id int primary key); insert into public.sentinel values (1)");
  await pool.query("create table public.private_notes (id int primary key, body text not null)");
  await pool.query("create table public.shared_notes (id int primary key, body text not null)");
  await pool.query(`grant select, insert on public.shared_notes to ${app.name}`);
});
afterAll(async () => {
  await context.db.pool.query(`revoke all on public.shared_notes from ${app.name}`);
  await app.drop();
});

async function sentinelIntact() {
  const { rows } = await context.db.pool.query("select count(*)::int as n from public.sentinel");
  expect(rows[0].n).toBe(1);
}

describe("a role holding only steward_client", () => {
  it("can neither read nor change any steward table, view or sequence", async () => {
    const { rows } = await context.db.pool.query<{ name: string; kind: string }>(
      `select c.oid::regclass::text as name, c.relkind::text as kind from pg_class c
        where c.relnamespace = 'steward'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S') order by 1`,
    );
    expect(rows.length).toBeGreaterThan(20);
    for (const { name, kind } of rows) {
      const statements =
        kind === "S"
          ? [`select nextval('${name}')`]
          : kind === "r" || kind === "p"
            ? [`select * from ${name} limit 1`, `delete from ${name}`, `insert into ${name} default values`]
            : [`select * from ${name} limit 1`];
      for (const statement of statements) {
        expect((await sqlError(app.pool.query(statement))).code, statement).toBe("42501");
      }
    }
  });

  it("can execute the client functions and no other steward function", async () => {
    const { rows } = await context.db.pool.query<{ signature: string; call: string; client: boolean }>(
      `select p.oid::regprocedure::text as signature,
              format('select %s(%s)', p.oid::regproc,
                     coalesce((select string_agg(format('null::%s', format_type(t, null)), ', ' order by i)
                                 from unnest(p.proargtypes) with ordinality as a(t, i)), '')) as call,
              p.oid = any (steward.client_functions()::oid[]) as client
         from pg_proc p where p.pronamespace = 'steward'::regnamespace and p.prokind = 'f'
          and p.prorettype <> 'trigger'::regtype`,
    );
    const refused: string[] = [];
    for (const row of rows) {
      const error = await app.pool.query(row.call).then(
        () => undefined,
        (e: { code: string }) => e.code,
      );
      if (row.client) expect(error, row.signature).not.toBe("42501");
      else if (error === "42501") refused.push(row.signature);
      else throw new Error(`${row.signature} ran for steward_client (${error ?? "no error"})`);
    }
    expect(refused.length).toBe(rows.filter((row) => !row.client).length);
  });

  it("cannot use page or batch_insert to touch a table it has no privilege on", async () => {
    expect(await sqlError(app.pool.query("select steward.page('public.private_notes', array['id'])"))).toMatchObject({
      code: "42501",
    });
    expect(
      await sqlError(app.pool.query(`select steward.batch_insert('public.private_notes', '[{"id": 1, "body": "x"}]')`)),
    ).toMatchObject({ code: "42501" });
    // On a table it may use, both work as the role itself.
    expect(
      (await app.pool.query(`select steward.batch_insert('public.shared_notes', '[{"id": 1, "body": "x"}]') as n`))
        .rows[0].n,
    ).toBe(1);
    expect(
      (await app.pool.query("select steward.page('public.shared_notes', array['id']) as p")).rows[0].p.rows,
    ).toHaveLength(1);
  });
});

const HOSTILE = [
  "'); drop table public.sentinel; --",
  '"; drop table public.sentinel; --',
  "%I%L%s%1$s",
  "x\\' or '1'='1",
  "$$; drop table public.sentinel; $$",
  "public.sentinel",
  "ﾠ\u200b\u202e☠",
  "a".repeat(5000),
];

describe("hostile strings in every text argument", () => {
  it("are data to rate_limit_hit, lease_acquire, circuit_allow/record and enqueue_invalidation", async () => {
    for (const text of HOSTILE) {
      for (const call of [
        () => app.pool.query("select * from steward.rate_limit_hit('security', $1)", [text]),
        () => app.pool.query("select * from steward.rate_limit_hit($1, 'k')", [text]),
        () => app.pool.query("select steward.lease_acquire($1, 1, '1 second')", [text]),
        () => app.pool.query("select steward.circuit_allow($1)", [text]),
        () => app.pool.query("select steward.circuit_record($1, false, $1)", [text]),
        () => app.pool.query("select steward.enqueue_invalidation($1)", [text]),
      ]) {
        const outcome = await call().then(
          () => "ok",
          (error: { code: string }) => error.code,
        );
        // Either it worked on the string as data, or it refused it as a bad argument.
        expect(["ok", "22023", "22001", "P0002"]).toContain(outcome);
      }
    }
    await sentinelIntact();
  });

  it("are refused by page and batch_insert as identifiers, never run as SQL", async () => {
    for (const text of HOSTILE) {
      for (const call of [
        () => app.pool.query("select steward.page('public.shared_notes', array[$1])", [text]),
        () => app.pool.query("select steward.page('public.shared_notes', array['id'], $1)", [text]),
        () =>
          app.pool.query(
            "select steward.page('public.shared_notes', array['id'], null, 10, jsonb_build_object($1::text, 1))",
            [text],
          ),
        () =>
          app.pool.query(
            "select steward.batch_insert('public.shared_notes', jsonb_build_array(jsonb_build_object($1::text, 1)))",
            [text],
          ),
        () => app.pool.query("select steward.batch_insert('public.shared_notes', '[]', $1)", [text]),
      ]) {
        const code = await call().then(
          () => "ok",
          (error: { code: string }) => error.code,
        );
        expect(code.startsWith("22") || code === "42703", `${text.slice(0, 30)}: ${code}`).toBe(true);
      }
    }
    await sentinelIntact();
  });

  it("are stored as data by record_requests", async () => {
    const rows = HOSTILE.map((text, i) => ({
      at: new Date().toISOString(),
      endpoint: text.slice(0, 200),
      method: "GET",
      status: 200,
      duration_ms: 1,
      cache_hit: false,
      request_id: `hostile-${i}`,
    }));
    await app.pool
      .query("select steward.record_requests($1::jsonb)", [JSON.stringify(rows)])
      .catch((error: { code: string }) => {
        expect(error.code.startsWith("22")).toBe(true);
      });
    await sentinelIntact();
  });
});

describe("search_path attacks", () => {
  let attacker: pg.PoolClient;
  beforeAll(async () => {
    await context.db.pool.query(`grant create on database ${context.db.name} to ${app.name}`);
  });
  afterAll(async () => {
    await context.db.pool.query(`drop schema if exists evil cascade`);
    await context.db.pool.query(`revoke create on database ${context.db.name} from ${app.name}`);
  });

  it("cannot make a SECURITY DEFINER function run the caller's objects", async () => {
    attacker = await app.pool.connect();
    try {
      await attacker.query("create schema if not exists evil");
      // Objects named like what the functions use, earlier on the caller's path.
      await attacker.query(`
        create or replace function evil.now() returns timestamptz language sql as $$ select timestamptz '2000-01-01' $$;
        create or replace function evil.setting_interval(text) returns interval language sql as $$ select interval '0' $$;
        create or replace function evil.textcat(a text, b text) returns text language sql as $$ select 'pwned' $$;
        create operator evil.= (leftarg = text, rightarg = text, function = pg_catalog.textne);
        create temp table settings (name text, value text);
        create temp table invalidations (id int);`);
      await attacker.query("set search_path = evil, pg_temp, public");
      // The rate limit still counts: 3 per hour admits 3, then refuses.
      const decisions: boolean[] = [];
      for (let i = 0; i < 4; i++) {
        decisions.push(
          (await attacker.query("select allowed from steward.rate_limit_hit('security', 'path-attack')")).rows[0]
            .allowed,
        );
      }
      expect(decisions).toEqual([true, true, true, false]);
      // Enqueueing still dedups into the real queue.
      const a = (await attacker.query("select steward.enqueue_invalidation('path:attack') as id")).rows[0].id;
      const b = (await attacker.query("select steward.enqueue_invalidation('path:attack') as id")).rows[0].id;
      expect(a).toBe(b);
      // page (SECURITY INVOKER) still filters with the real = operator.
      const page = (
        await attacker.query(
          `select steward.page('public.shared_notes', array['id'], null, 10, '{"body": "nope"}') as p`,
        )
      ).rows[0].p;
      expect(page.rows).toEqual([]);
    } finally {
      await attacker.query("reset search_path").catch(() => undefined);
      attacker.release();
    }
    // One pending entry in the real queue, holding both enqueues.
    const { rows } = await context.db.pool.query(
      "select enqueues from steward.pending_invalidations where tag = 'path:attack'",
    );
    expect(rows).toEqual([{ enqueues: 2 }]);
  });
});

describe("the owner of a tracked table", () => {
  beforeAll(async () => {
    await context.db.pool.query(`grant create on database ${context.db.name} to ${app.name}`);
  });
  afterAll(async () => {
    await context.db.pool.query("drop schema if exists owned cascade");
    await context.db.pool.query(`revoke create on database ${context.db.name} from ${app.name}`);
  });

  it("cannot make the tracking trigger (security definer) run their casts, whatever the statement", async () => {
    const { pool } = context.db;
    await app.pool.query(`
      create schema owned;
      create table owned.calls (role name not null, via text not null);
      create table owned.items (id int primary key, name text, mood text);`);
    await pool.query("select steward.track_table('owned.items', array['items', 'item:{name}', 'mood:{mood}'])");
    // Then the owner adds a column of an enum of theirs, and turns a placeholder column into it:
    // to_jsonb and ::text call a cast to json or text that the type's owner wrote.
    await app.pool.query(`
      create type owned.mood as enum ('happy', 'sad');
      create function owned.as_json(m owned.mood) returns json language plpgsql as $$
        begin insert into owned.calls values (current_user, 'json'); return to_json('cast'::text); end $$;
      create function owned.as_text(m owned.mood) returns text language plpgsql as $$
        begin insert into owned.calls values (current_user, 'text'); return 'cast'; end $$;
      create cast (owned.mood as json) with function owned.as_json(owned.mood);
      create cast (owned.mood as text) with function owned.as_text(owned.mood);
      alter table owned.items add column feeling owned.mood;
      alter table owned.items alter column mood type owned.mood using 'happy';`);
    await pool.query("delete from steward.invalidations");
    // A statement of a few rows and one of many, an update and a delete, as the owner.
    await app.pool.query(`
      insert into owned.items values (1, 'one', 'happy', 'sad');
      insert into owned.items select g, 'n' || g, 'sad', 'happy' from generate_series(2, 40) g;
      update owned.items set name = 'uno' where id = 1;
      delete from owned.items where id = 2;`);
    expect((await pool.query("select role, via from owned.calls")).rows).toEqual([]);
    // The tags are still there, the enum rendered as its label (its output function).
    const { rows } = await pool.query(
      "select tag from steward.pending_invalidations where tag in ('items', 'item:one', 'item:uno', 'item:n2', 'mood:happy', 'mood:sad') order by tag",
    );
    expect(rows.map((row) => row.tag)).toEqual(["item:n2", "item:one", "item:uno", "items", "mood:happy", "mood:sad"]);
  });
});
