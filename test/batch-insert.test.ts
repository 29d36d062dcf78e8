import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { asRole, createTestRole, functionAccess, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let writer: Awaited<ReturnType<typeof createTestRole>>;

async function batchInsert(rows: unknown, onConflict?: string, target = "public.orders"): Promise<number> {
  const { rows: result } = await context.db.pool.query<{ count: number }>(
    onConflict === undefined
      ? "select steward.batch_insert($1::regclass, $2::jsonb) as count"
      : "select steward.batch_insert($1::regclass, $2::jsonb, $3) as count",
    onConflict === undefined ? [target, JSON.stringify(rows)] : [target, JSON.stringify(rows), onConflict],
  );
  return result[0]!.count;
}

async function orderCount(): Promise<number> {
  const { rows } = await context.db.pool.query<{ count: number }>("select count(*)::int as count from public.orders");
  return rows[0]!.count;
}

beforeAll(async () => {
  await context.db.pool.query(`
    create table public.orders (
      id         integer primary key,
      customer   text not null,
      amount     numeric(10, 2) not null default 0,
      placed_at  timestamptz not null default now(),
      tags       text[],
      detail     jsonb,
      status     text not null default 'new',
      serial     bigint generated always as identity
    );
    -- A trigger whose function names a table without its schema: batch_insert must not change
    -- the search_path it runs with.
    create table public.order_log (order_id integer not null);
    create function public.log_order() returns trigger language plpgsql as $$
    begin
      insert into order_log values (new.id);
      return new;
    end $$;
    create trigger log_order after insert on public.orders for each row execute function public.log_order();`);
  writer = await createTestRole(context.db, "batch_writer");
  await context.db.pool.query(`grant steward_client to ${writer.name}`);
});

beforeEach(async () => {
  await context.db.pool.query("truncate public.orders, public.order_log");
});

afterAll(async () => {
  await writer?.drop();
});

describe("steward.batch_insert", () => {
  it("inserts every row in one call, converting JSON to the column types, and returns the count", async () => {
    const inserted = await batchInsert([
      {
        id: 1,
        customer: "ada",
        amount: 12.5,
        placed_at: "2024-05-01T10:00:00Z",
        tags: ["a", "b"],
        detail: { gift: true },
      },
      { id: 2, customer: "bob", amount: "7", placed_at: "2024-05-01T11:30:00+02:00", tags: [], detail: null },
    ]);
    expect(inserted).toBe(2);
    const { rows } = await context.db.pool.query(
      "select id, customer, amount::text, placed_at = '2024-05-01T09:30:00Z' as converted, tags, detail from public.orders order by id",
    );
    expect(rows).toEqual([
      { id: 1, customer: "ada", amount: "12.50", converted: false, tags: ["a", "b"], detail: { gift: true } },
      { id: 2, customer: "bob", amount: "7.00", converted: true, tags: [], detail: null },
    ]);
    const { rows: logged } = await context.db.pool.query("select count(*)::int as count from public.order_log");
    expect(logged[0].count).toBe(2);
  });

  it("gives a key a row leaves out the column default, rows with the same keys in array order", async () => {
    expect(
      await batchInsert([
        { id: 10, customer: "a" },
        { id: 11, customer: "b", status: "paid", amount: 3 },
        { id: 12, customer: "c" },
      ]),
    ).toBe(3);
    const { rows } = await context.db.pool.query(
      "select id, amount::text, status, serial from public.orders order by serial",
    );
    expect(rows.map((row) => [row.id, row.amount, row.status])).toEqual([
      [10, "0.00", "new"],
      [12, "0.00", "new"],
      [11, "3.00", "paid"],
    ]);
  });

  it("inserts 10,000 rows in one call and refuses 10,001 without writing any", async () => {
    const rows = Array.from({ length: 10_001 }, (_, i) => ({ id: i + 1, customer: `c${i}` }));
    await expect(batchInsert(rows)).rejects.toMatchObject({
      code: "22023",
      message: expect.stringContaining("at most 10000 rows"),
    });
    expect(await orderCount()).toBe(0);
    expect(await batchInsert(rows.slice(0, 10_000))).toBe(10_000);
    expect(await orderCount()).toBe(10_000);
  });

  it("returns 0 for an empty array", async () => {
    expect(await batchInsert([])).toBe(0);
  });

  it("on_conflict error fails the whole batch; ignore skips and does not count the conflicting rows", async () => {
    await batchInsert([{ id: 1, customer: "first" }]);
    const batch = [
      { id: 2, customer: "new" },
      { id: 1, customer: "again" },
      { id: 3, customer: "new" },
    ];
    await expect(batchInsert(batch)).rejects.toMatchObject({ code: "23505", detail: "Key (id)=(1) already exists." });
    expect(await orderCount()).toBe(1);
    await expect(batchInsert(batch, "error")).rejects.toMatchObject({ code: "23505" });
    expect(await batchInsert([...batch, { id: 3, customer: "twice in one batch" }], "ignore")).toBe(2);
    const { rows } = await context.db.pool.query("select id, customer from public.orders order by id");
    expect(rows).toEqual([
      { id: 1, customer: "first" },
      { id: 2, customer: "new" },
      { id: 3, customer: "new" },
    ]);
  });

  describe("refuses a bad batch with a clear error and writes nothing", () => {
    const good = { id: 1, customer: "fine" };
    it.each([
      ["rows that are not an array", { id: 1 }, "22023", /rows must be a JSON array of objects, got object/],
      ["rows that are null", null, "22023", /rows must be a JSON array of objects, got null/],
      ["a row that is not an object", [good, 42], "22023", /rows\[1\] is number, not a JSON object/],
      ["an empty row", [good, {}], "22023", /rows\[1\] is an empty object/],
      [
        "unknown keys, named",
        [good, { id: 2, customer: "x", colour: "red", "name) values (1); drop table public.orders; --": 1 }],
        "22023",
        /unknown key\(s\) "colour", "name\) values \(1\); drop table public\.orders; --": not columns of public\.orders/,
      ],
      [
        "a value of the wrong type",
        [good, { id: "two", customer: "x" }],
        "22P02",
        /invalid input syntax for type integer: "two"/,
      ],
      ["a number out of range", [good, { id: 2, customer: "x", amount: 1e12 }], "22003", /numeric field overflow/],
      [
        "a bad timestamp",
        [good, { id: 2, customer: "x", placed_at: "yesterday-ish" }],
        "22007",
        /invalid input syntax for type timestamp/,
      ],
      [
        "null in a NOT NULL column",
        [good, { id: 2, customer: null }],
        "23502",
        /null value in column "customer" of relation "orders"/,
      ],
      [
        "a generated column",
        [{ ...good, serial: 5 }],
        "428C9",
        /cannot insert a non-DEFAULT value into column "serial"/,
      ],
    ])("%s", async (_, rows, code, message) => {
      await expect(batchInsert(rows)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
      expect(await orderCount()).toBe(0);
    });

    it("an on_conflict other than error or ignore", async () => {
      await expect(batchInsert([good], "update")).rejects.toMatchObject({
        code: "22023",
        hint: expect.stringContaining("ignore"),
      });
      expect(await orderCount()).toBe(0);
    });

    it("a target that is not a table", async () => {
      await context.db.pool.query("create sequence if not exists public.order_numbers");
      await expect(batchInsert([good], undefined, "public.order_numbers")).rejects.toMatchObject({
        code: "22023",
        message: expect.stringContaining("is not a table"),
      });
    });

    it("stores values that look like SQL as plain values", async () => {
      expect(await batchInsert([{ id: 1, customer: "x'); drop table public.orders; --" }])).toBe(1);
      const { rows } = await context.db.pool.query("select customer from public.orders");
      expect(rows).toEqual([{ customer: "x'); drop table public.orders; --" }]);
    });
  });

  describe("privileges", () => {
    it("runs as the caller: without INSERT on the table it is refused", async () => {
      await expect(
        asRole(context.db, writer.name, (client) =>
          client.query("select steward.batch_insert('public.orders', $1)", [
            JSON.stringify([{ id: 1, customer: "x" }]),
          ]),
        ),
      ).rejects.toMatchObject({
        code: "42501",
        message: expect.stringContaining("permission denied for table orders"),
      });
    });

    it("row-level security checks each new row", async () => {
      const { pool } = context.db;
      await pool.query(`
        create table public.tickets (id integer primary key, owner text not null);
        alter table public.tickets enable row level security;
        create policy own_tickets on public.tickets using (owner = current_user) with check (owner = current_user);
        grant select, insert on public.tickets to ${writer.name};`);
      const insert = (rows: unknown) =>
        asRole(
          context.db,
          writer.name,
          async (client) =>
            (await client.query("select steward.batch_insert('public.tickets', $1) as count", [JSON.stringify(rows)]))
              .rows[0].count,
          { commit: true },
        );
      expect(
        await insert([
          { id: 1, owner: writer.name },
          { id: 2, owner: writer.name },
        ]),
      ).toBe(2);
      await expect(
        insert([
          { id: 3, owner: writer.name },
          { id: 4, owner: "someone_else" },
        ]),
      ).rejects.toMatchObject({
        code: "42501",
        message: expect.stringContaining("row-level security policy"),
      });
      const { rows } = await pool.query("select id from public.tickets order by id");
      expect(rows.map((row) => row.id)).toEqual([1, 2]);
    });

    it("is SECURITY INVOKER, executable by steward_client and not by PUBLIC", async () => {
      expect(await functionAccess(context.db.pool, "steward.batch_insert(regclass, jsonb, text)")).toEqual({
        client: true,
        public: false,
        definer: false,
      });
    });
  });
});
