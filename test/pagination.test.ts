import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { page, pages, type PageOptions } from "../src/client/pagination.ts";
import { asRole, createTestRole, functionAccess, useTestDatabase, type TestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let reader: Awaited<ReturnType<typeof createTestRole>>;
let stranger: Awaited<ReturnType<typeof createTestRole>>;

/** Every row of a walk through all pages, in the order the pages returned them. */
async function walk(
  db: TestDatabase | { query: TestDatabase["pool"]["query"] },
  target: string,
  options: Omit<PageOptions, "after">,
) {
  const queryable = "pool" in db ? db.pool : db;
  const all: Array<Record<string, unknown>> = [];
  for await (const rows of pages(queryable, target, options)) all.push(...rows);
  return all;
}

async function ids(sql: string): Promise<number[]> {
  const { rows } = await context.db.pool.query<{ id: number }>(sql);
  return rows.map((row) => row.id);
}

beforeAll(async () => {
  const { pool } = context.db;
  // Few distinct created_at and grp values: lots of ties for the later columns to break.
  await pool.query(`
    create table public.items (
      id         integer primary key,
      created_at timestamptz not null,
      grp        integer not null,
      name       text,
      price      numeric not null
    );
    create index on public.items (created_at desc, id);
    insert into public.items
    select g, timestamptz '2024-01-01 00:00:00+00' + (g % 17) * interval '1 hour', g % 5,
           case when g % 4 = 0 then null else 'item ' || g end, (g % 13) * 1.25
      from generate_series(1, 500) g;
    create table public.other (id integer primary key);
    insert into public.other select generate_series(1, 100);
    create view public.items_view as select * from public.items;`);
  reader = await createTestRole(context.db, "page_reader");
  stranger = await createTestRole(context.db, "page_stranger");
  await pool.query(`grant steward_client to ${reader.name}, ${stranger.name}`);
  await pool.query(`grant select on public.items to ${reader.name}`);
});

afterAll(async () => {
  await reader?.drop();
  await stranger?.drop();
});

describe("steward.page", () => {
  it.each([
    ["id ascending", ["id"], "id"],
    ["id descending", ["id desc"], "id desc"],
    ["mixed: newest first, ties by id", ["created_at desc", "id"], "created_at desc, id"],
    ["mixed over three columns", ["grp", "created_at desc", "id asc"], "grp, created_at desc, id"],
    ["all descending (one row comparison)", ["grp desc", "price desc", "id desc"], "grp desc, price desc, id desc"],
    ["all ascending (one row comparison)", ["grp", "price", "id"], "grp, price, id"],
  ])("walks every page of %s and returns exactly the ordered query", async (_, orderBy, sqlOrder) => {
    const walked = await walk(context.db, "public.items", { orderBy, max: 7 });
    expect(walked.map((row) => row.id)).toEqual(await ids(`select id from public.items order by ${sqlOrder}`));
  });

  it("returns whole rows as JSON and a null next on the last page", async () => {
    const first = await page(context.db.pool, "public.items", { orderBy: ["id"], max: 2 });
    expect(first.rows).toEqual([
      { id: 1, created_at: "2024-01-01T01:00:00+00:00", grp: 1, name: "item 1", price: 1.25 },
      { id: 2, created_at: "2024-01-01T02:00:00+00:00", grp: 2, name: "item 2", price: 2.5 },
    ]);
    expect(typeof first.next).toBe("string");
    const last = await page(context.db.pool, "public.items", { orderBy: ["id"], max: 1000 });
    expect(last.rows).toHaveLength(500);
    expect(last.next).toBeNull();
    const empty = await page(context.db.pool, "public.items", { orderBy: ["id"], filter: { grp: 99 } });
    expect(empty).toEqual({ rows: [], next: null });
  });

  it("filters by equality on columns, null meaning IS NULL, across pages", async () => {
    const walked = await walk(context.db, "public.items", {
      orderBy: ["created_at desc", "id"],
      filter: { grp: 3, name: null },
      max: 4,
    });
    expect(walked.map((row) => row.id)).toEqual(
      await ids("select id from public.items where grp = 3 and name is null order by created_at desc, id"),
    );
    expect(walked.length).toBeGreaterThan(4);
  });

  it("returns each row that exists throughout a walk exactly once, even with writes mid-walk", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.feed (id integer primary key, at integer not null);
      insert into public.feed select g, g / 10 from generate_series(1, 300) g;`);
    const seen: number[] = [];
    let pagesRead = 0;
    for await (const rows of pages<{ id: number }>(pool, "public.feed", { orderBy: ["at desc", "id"], max: 25 })) {
      seen.push(...rows.map((row) => row.id));
      if (++pagesRead === 3) {
        // Behind the position (at 30 and 23 were already passed): not returned. Ahead of it: returned.
        // A row ahead that is deleted is not returned; one behind that moves ahead is returned again.
        await pool.query(`
          insert into public.feed values (1001, 30), (1002, 1), (1003, 0);
          delete from public.feed where id = 5;
          update public.feed set at = 0 where id = 299;`);
      }
    }
    expect(seen).not.toContain(1001);
    expect(seen).toContain(1002);
    expect(seen).toContain(1003);
    expect(seen).not.toContain(5);
    expect(seen.filter((id) => id === 299)).toHaveLength(2);
    const others = seen.filter((id) => id <= 300 && id !== 299);
    expect(new Set(others).size).toBe(others.length);
    expect(others.sort((a, b) => a - b)).toEqual(
      Array.from({ length: 300 }, (_, i) => i + 1).filter((id) => id !== 5 && id !== 299),
    );
  });

  it("orders uuid, varchar, enum, domain and timestamptz keys as ORDER BY does", async () => {
    const { pool } = context.db;
    await pool.query(`
      create type public.mood as enum ('sad', 'ok', 'happy');
      create domain public.positive as integer not null check (value > 0);
      create table public.typed (
        id     uuid primary key,
        code   varchar(12) not null,
        mood   public.mood not null,
        rank   public.positive,
        at     timestamptz not null
      );
      insert into public.typed
      select md5(g::text)::uuid, 'c' || (g % 9), (array['sad', 'ok', 'happy'])[1 + g % 3]::public.mood, 1 + g % 4,
             timestamptz '2024-03-01 12:00:00.123456+00' + (g % 6) * interval '1.5 seconds'
        from generate_series(1, 120) g;`);
    for (const [orderBy, sql] of [
      [["mood", "code desc", "id"], "mood, code desc, id"],
      [["rank desc", "at", "id"], "rank desc, at, id"],
      [["at desc", "id desc"], "at desc, id desc"],
    ] as const) {
      const walked = await walk(context.db, "public.typed", { orderBy: [...orderBy], max: 11 });
      const { rows } = await pool.query<{ id: string }>(`select id from public.typed order by ${sql}`);
      expect(walked.map((row) => row.id)).toEqual(rows.map((row) => row.id));
    }
    const filtered = await walk(context.db, "public.typed", {
      orderBy: ["id"],
      filter: { mood: "ok", rank: 2 },
      max: 5,
    });
    const { rows: expected } = await pool.query(
      "select id from public.typed where mood = 'ok' and rank = 2 order by id",
    );
    expect(filtered.map((row) => row.id)).toEqual(expected.map((row) => row.id));
  });

  describe("refuses bad arguments with SQLSTATE 22023 and runs nothing", () => {
    const refusals: Array<[string, string, PageOptions & { target?: string }, RegExp]> = [
      [
        "an order_by item that is SQL",
        "22023",
        { orderBy: ["id; drop table public.other; --"] },
        /not a column of public\.items/,
      ],
      ["an order_by expression", "22023", { orderBy: ["id desc, (select 1)"] }, /not a column/],
      ["a quoted identifier", "22023", { orderBy: ['"id"'] }, /not a column/],
      [
        "a direction that is SQL",
        "22023",
        { orderBy: ["id desc nulls first; drop table public.other"] },
        /not a column/,
      ],
      ["no order_by", "22023", { orderBy: [] }, /at least one column/],
      ["a column named twice", "22023", { orderBy: ["id", "id desc"] }, /twice/],
      ["a nullable sort column", "22023", { orderBy: ["name", "id"] }, /it may be null/],
      ["an order that is not unique", "22023", { orderBy: ["grp", "created_at"] }, /does not make the order unique/],
      [
        "a filter key that is SQL",
        "22023",
        { orderBy: ["id"], filter: { "grp = grp or true --": 1 } },
        /filter key .* is not a column/,
      ],
      [
        "a filter value that is SQL, for an integer",
        "22P02",
        { orderBy: ["id"], filter: { grp: "1 or 1=1" } },
        /invalid input syntax for type integer/,
      ],
      ["max 0", "22023", { orderBy: ["id"], max: 0 }, /max must be from 1 to 1000/],
      ["max 1001", "22023", { orderBy: ["id"], max: 1001 }, /max must be from 1 to 1000/],
      ["a view", "22023", { orderBy: ["id"], target: "public.items_view" }, /is not a table/],
      [
        "a cursor that is not base64",
        "22023",
        { orderBy: ["id"], after: "'; drop table public.other; --" },
        /not a cursor of this query/,
      ],
      [
        "a cursor of made-up JSON",
        "22023",
        { orderBy: ["id"], after: Buffer.from('{"k":[400],"c":"0"}').toString("base64url") },
        /not a cursor of this query/,
      ],
    ];
    it.each(refusals)("%s", async (_, code, { target, ...options }, message) => {
      await expect(page(context.db.pool, target ?? "public.items", options)).rejects.toMatchObject({
        code,
        message: expect.stringMatching(message),
      });
      expect(await ids("select count(*)::int as id from public.other")).toEqual([100]);
    });

    it("hints at the primary key when the order is not unique", async () => {
      await expect(page(context.db.pool, "public.items", { orderBy: ["grp"] })).rejects.toMatchObject({
        hint: expect.stringContaining("primary key (id)"),
      });
    });

    it("a target that is SQL is not a table name", async () => {
      await expect(
        page(context.db.pool, "public.other; drop table public.other", { orderBy: ["id"] }),
      ).rejects.toThrow();
      expect(await ids("select count(*)::int as id from public.other")).toEqual([100]);
    });

    it("a cursor of another table, order or filter, or an altered one, is an error rather than a wrong page", async () => {
      const { pool } = context.db;
      const { next } = await page(pool, "public.items", { orderBy: ["id"], filter: { grp: 1 }, max: 3 });
      expect(next).toEqual(expect.any(String));
      const mismatches: Array<[string, PageOptions]> = [
        ["public.other", { orderBy: ["id"], after: next }],
        ["public.items", { orderBy: ["id desc"], filter: { grp: 1 }, after: next }],
        ["public.items", { orderBy: ["grp", "id"], filter: { grp: 1 }, after: next }],
        ["public.items", { orderBy: ["id"], filter: { grp: 2 }, after: next }],
        ["public.items", { orderBy: ["id"], after: next }],
      ];
      for (const [target, options] of mismatches) {
        await expect(page(pool, target, options), `${target} ${JSON.stringify(options)}`).rejects.toMatchObject({
          code: "22023",
          message: expect.stringContaining("not a cursor of this query"),
        });
      }
      // Change the key inside the cursor but keep its checksum.
      const decoded = JSON.parse(Buffer.from(next!, "base64url").toString()) as { k: number[]; c: string };
      const forged = Buffer.from(JSON.stringify({ ...decoded, k: [decoded.k[0]! + 100] })).toString("base64url");
      await expect(
        page(pool, "public.items", { orderBy: ["id"], filter: { grp: 1 }, after: forged }),
      ).rejects.toMatchObject({
        code: "22023",
      });
      // The same query accepts it.
      const second = await page(pool, "public.items", { orderBy: ["id"], filter: { grp: 1 }, max: 3, after: next });
      expect(second.rows.map((row) => row.id)).toEqual([16, 21, 26]);
    });
  });

  describe("plans (what page checks once per table, order and filter shape)", () => {
    /** A fresh table of 20 rows, paged once so that its plan is stored. */
    async function warmed(name: string): Promise<void> {
      await context.db.pool.query(`
        create table public.${name} (id integer primary key, rank integer not null, label text not null);
        insert into public.${name} select g, g % 4, 'row ' || g from generate_series(1, 20) g;`);
      await page(context.db.pool, `public.${name}`, { orderBy: ["rank", "id"], max: 5 });
    }

    it("are stored once and reused: a second call with the same order and filter shape adds no plan", async () => {
      const { pool } = context.db;
      await warmed("plan_reuse");
      const count = async () =>
        (
          await pool.query<{ n: number }>(
            "select count(*)::int as n from steward.page_plans where relation = 'public.plan_reuse'::regclass",
          )
        ).rows[0]!.n;
      expect(await count()).toBe(1);
      // On one connection past plpgsql's five custom plans, as a pooled application runs it.
      const client = await pool.connect();
      try {
        let after: string | null = null;
        const seen: number[] = [];
        for (let call = 0; call < 8; call++) {
          const current: Awaited<ReturnType<typeof page<{ id: number }>>> = await page<{ id: number }>(
            client,
            "public.plan_reuse",
            { orderBy: ["rank", "id"], max: 3, after },
          );
          seen.push(...current.rows.map((row) => row.id));
          after = current.next;
          if (after === null) break;
        }
        expect(seen).toEqual(await ids("select id from public.plan_reuse order by rank, id"));
      } finally {
        client.release();
      }
      expect(await count()).toBe(1);
      // Another filter shape (a value against IS NULL) is another plan.
      await page(pool, "public.plan_reuse", { orderBy: ["id"], filter: { label: "row 3" } });
      await page(pool, "public.plan_reuse", { orderBy: ["id"], filter: { label: null } });
      expect(await count()).toBe(3);
    });

    it("a sort column that loses NOT NULL after its plan was stored is refused, not paged with holes", async () => {
      const { pool } = context.db;
      await warmed("plan_nullable");
      await pool.query("alter table public.plan_nullable alter column rank drop not null");
      await expect(page(pool, "public.plan_nullable", { orderBy: ["rank", "id"] })).rejects.toMatchObject({
        code: "22023",
        message: expect.stringContaining('cannot order by "rank": it may be null'),
      });
    });

    it("an order whose unique index is dropped after its plan was stored is refused", async () => {
      const { pool } = context.db;
      await pool.query(`
        create table public.plan_unique (id integer not null, label text not null);
        create unique index plan_unique_id on public.plan_unique (id);
        insert into public.plan_unique select g, 'row ' || g from generate_series(1, 10) g;`);
      await page(pool, "public.plan_unique", { orderBy: ["id"] });
      await pool.query("drop index public.plan_unique_id");
      await expect(page(pool, "public.plan_unique", { orderBy: ["id"] })).rejects.toMatchObject({
        code: "22023",
        message: expect.stringContaining("does not make the order unique"),
      });
    });

    it("follows a renamed table, schema and column: the new names page, the old column name is refused", async () => {
      const { pool } = context.db;
      await warmed("plan_renamed");
      const oid = (await pool.query("select 'public.plan_renamed'::regclass::oid as oid")).rows[0].oid;
      await pool.query(`
        create schema plan_moved;
        alter table public.plan_renamed set schema plan_moved;
        alter table plan_moved.plan_renamed rename to plan_moved_table;
        alter table plan_moved.plan_moved_table rename column rank to position;`);
      const moved = await page<{ id: number; position: number }>(pool, "plan_moved.plan_moved_table", {
        orderBy: ["position", "id"],
        max: 20,
      });
      expect(moved.rows.map((row) => row.id)).toEqual(
        await ids("select id from plan_moved.plan_moved_table order by position, id"),
      );
      await expect(page(pool, `${oid}`, { orderBy: ["rank", "id"] })).rejects.toMatchObject({
        code: "22023",
        message: expect.stringContaining('order_by item "rank" is not a column of plan_moved.plan_moved_table'),
      });
      await pool.query("drop schema plan_moved cascade");
    });

    it("pages in a read-only transaction (a standby) without storing a plan", async () => {
      const { pool } = context.db;
      await pool.query("create table public.plan_read_only (id integer primary key)");
      await pool.query("insert into public.plan_read_only select generate_series(1, 5)");
      const client = await pool.connect();
      try {
        await client.query("begin transaction read only");
        const result = await page<{ id: number }>(client, "public.plan_read_only", { orderBy: ["id desc"] });
        expect(result.rows.map((row) => row.id)).toEqual([5, 4, 3, 2, 1]);
        await client.query("commit");
      } finally {
        client.release();
      }
      const { rows } = await pool.query(
        "select count(*)::int as n from steward.page_plans where relation = 'public.plan_read_only'::regclass",
      );
      expect(rows[0].n).toBe(0);
    });

    it("cannot be written by a client, and a plan another role stored gives no privilege", async () => {
      const { pool } = context.db;
      await warmed("plan_private");
      await expect(
        asRole(context.db, stranger.name, (client) =>
          client.query(
            "update steward.page_plans set first_sql = 'select array[]::jsonb[]' where relation = 'public.plan_private'::regclass",
          ),
        ),
      ).rejects.toMatchObject({ code: "42501" });
      // The plan exists (stored by the owner above); the stranger still may not read the table.
      await expect(
        asRole(context.db, stranger.name, (client) =>
          page(client, "public.plan_private", { orderBy: ["rank", "id"], max: 5 }),
        ),
      ).rejects.toMatchObject({ code: "42501" });
      const { rows } = await pool.query(
        "select first_sql from steward.page_plans where relation = 'public.plan_private'::regclass",
      );
      expect(rows[0].first_sql).toContain("from public.plan_private as t");
    });
  });

  describe("privileges", () => {
    it("runs as the caller: a role with SELECT and steward_client pages the table", async () => {
      const walked = await asRole(context.db, reader.name, (client) =>
        walk(client, "public.items", { orderBy: ["id"], max: 100 }),
      );
      expect(walked).toHaveLength(500);
    });

    it("a role without SELECT on the table cannot page it", async () => {
      await expect(
        asRole(context.db, stranger.name, (client) => page(client, "public.items", { orderBy: ["id"] })),
      ).rejects.toMatchObject({ code: "42501", message: expect.stringContaining("permission denied for table items") });
    });

    it("row-level security applies: each role sees only its own rows, page by page", async () => {
      const { pool } = context.db;
      await pool.query(`
        create table public.notes (id integer primary key, owner text not null, body text not null);
        insert into public.notes select g, case when g % 3 = 0 then '${reader.name}' else '${stranger.name}' end, 'note ' || g
          from generate_series(1, 90) g;
        alter table public.notes enable row level security;
        create policy own_notes on public.notes using (owner = current_user);
        grant select on public.notes to ${reader.name}, ${stranger.name};`);
      const mine = await asRole(context.db, reader.name, (client) =>
        walk(client, "public.notes", { orderBy: ["id desc"], max: 4 }),
      );
      expect(mine.map((row) => row.id)).toEqual(Array.from({ length: 30 }, (_, i) => 90 - 3 * i));
      expect(mine.every((row) => row.owner === reader.name)).toBe(true);
      const theirs = await asRole(context.db, reader.name, (client) =>
        walk(client, "public.notes", { orderBy: ["id"], filter: { owner: stranger.name } }),
      );
      expect(theirs).toEqual([]);
      const strangers = await asRole(context.db, stranger.name, (client) =>
        walk(client, "public.notes", { orderBy: ["id"], max: 1000 }),
      );
      expect(strangers).toHaveLength(60);
    });

    it("is executable by steward_client and not by PUBLIC", async () => {
      expect(await functionAccess(context.db.pool, "steward.page(regclass, text[], text, integer, jsonb)")).toEqual({
        client: true,
        public: false,
        definer: false,
      });
    });
  });
});
