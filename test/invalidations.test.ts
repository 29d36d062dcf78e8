import pg from "pg";
import { describe, expect, it } from "vitest";
import { drainBatch, InvalidationDrainer, notifyPayloads, type Sink } from "../src/worker/invalidations.ts";
import { eventually, testLogger, useTestDatabase, whileLocked, withSettings } from "./helpers.ts";

const context = useTestDatabase();

/** The tag's pending entry, as the next claim sees it (one row, or none). */
async function pending(pool: pg.Pool, tag: string) {
  const { rows } = await pool.query(
    "select id::text, tag, attempts, deliver_at, enqueued_at, enqueues from steward.pending_invalidations where tag = $1",
    [tag],
  );
  return rows;
}

/** The queue's rows for the tag: an enqueue appends one; a claim folds them. */
async function queueRows(pool: pg.Pool, tag: string) {
  const { rows } = await pool.query(
    "select id::text, attempts, claimed_until from steward.invalidations where tag = $1 order by id",
    [tag],
  );
  return rows;
}

/** How many drainers have said they sleep (and would be woken by a NOTIFY). */
async function sleepingDrainers(pool: pg.Pool): Promise<number> {
  return (await pool.query("select count(*)::int as n from steward.sleeping_drainers")).rows[0].n;
}

function recordingSink(): Sink & { received: string[][] } {
  const received: string[][] = [];
  return { name: "recording", received, deliver: async (tags) => void received.push(tags) };
}

describe("enqueue_invalidation", () => {
  it("gives one delivery for 200 concurrent enqueues of one tag, under an id the enqueues returned", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const clients = await Promise.all(Array.from({ length: 20 }, () => pool.connect()));
    let ids: string[];
    try {
      // Each connection sends its ten one after another: a client runs one query at a time.
      ids = (
        await Promise.all(
          clients.map(async (client) => {
            const mine: string[] = [];
            for (let i = 0; i < 10; i++) {
              mine.push(
                (await client.query("select steward.enqueue_invalidation('concurrent:1')::text as id")).rows[0].id,
              );
            }
            return mine;
          }),
        )
      ).flat();
    } finally {
      clients.forEach((client) => client.release());
    }
    expect(await pending(pool, "concurrent:1")).toMatchObject([{ enqueues: 200 }]);
    const { rows: claimed } = await pool.query("select id::text, tag from steward.claim_invalidations(1000)");
    expect(claimed).toEqual([{ id: expect.any(String), tag: "concurrent:1" }]);
    // The claim folds every row into the oldest, whose enqueue saw no older one and returned it.
    expect(ids).toContain(claimed[0].id);
    expect(ids.every((id) => BigInt(id) >= BigInt(claimed[0].id))).toBe(true);
    expect(await queueRows(pool, "concurrent:1")).toHaveLength(1);
    await pool.query("delete from steward.invalidations");
  });

  it("pushes delivery back by the debounce, never past the first enqueue plus max_delay", async () => {
    const { pool } = context.db;
    await pool.query("select steward.enqueue_invalidation('debounced', '20 seconds')");
    const [first] = await pending(pool, "debounced");
    await pool.query("select steward.enqueue_invalidation('debounced', '50 seconds')");
    const [second] = await pending(pool, "debounced");
    expect(second.id).toBe(first.id);
    expect(second.deliver_at.getTime()).toBeGreaterThan(first.deliver_at.getTime());
    await pool.query("select steward.enqueue_invalidation('debounced', '10 minutes')");
    const [third] = await pending(pool, "debounced");
    // max_delay is 1 minute by default.
    expect(third.deliver_at.getTime() - third.enqueued_at.getTime()).toBe(60_000);
    // A later enqueue without debounce does not pull it forward either.
    await pool.query("select steward.enqueue_invalidation('debounced')");
    expect((await pending(pool, "debounced"))[0].deliver_at).toEqual(third.deliver_at);
  });

  it("makes a new entry for a tag whose entry is claimed (a write after a claim needs a new delivery)", async () => {
    const { pool } = context.db;
    await pool.query("select steward.enqueue_invalidation('inflight:1')");
    const { rows: claimed } = await pool.query(
      "select * from steward.claim_invalidations(1000) where tag = 'inflight:1'",
    );
    expect(claimed).toHaveLength(1);
    await pool.query("select steward.enqueue_invalidation('inflight:1')");
    const entries = await queueRows(pool, "inflight:1");
    expect(entries).toHaveLength(2);
    expect(entries.filter((e) => e.claimed_until === null)).toHaveLength(1);
    expect(await pending(pool, "inflight:1")).toMatchObject([{ attempts: 0, enqueues: 1 }]);
    // Failing the claimed one joins it to the pending one: one entry, retried after the backoff.
    await pool.query("select steward.fail_invalidations(array[$1::bigint], 'sink down')", [claimed[0].id]);
    const after = await pending(pool, "inflight:1");
    expect(after).toMatchObject([{ id: claimed[0].id, attempts: 1, enqueues: 2 }]);
    expect(after[0].deliver_at.getTime()).toBeGreaterThan(Date.now());
    await pool.query("delete from steward.invalidations where tag = 'inflight:1'");
  });

  it("refuses an empty tag or a negative debounce with SQLSTATE 22023, changing nothing", async () => {
    const { pool } = context.db;
    const before = (await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n;
    await expect(pool.query("select steward.enqueue_invalidation('')")).rejects.toMatchObject({ code: "22023" });
    await expect(pool.query("select steward.enqueue_invalidation('x', '-1 second')")).rejects.toMatchObject({
      code: "22023",
      message: "debounce must be zero or positive, got -00:00:01",
    });
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(before);
  });

  it("is the only thing steward_client may do with the queue", async () => {
    const { rows } = await context.db.pool.query(`
      select has_function_privilege('steward_client', 'steward.enqueue_invalidation(text, interval)', 'execute') as enqueue,
             has_function_privilege('steward_client', 'steward.claim_invalidations(integer, interval)', 'execute') as claim,
             has_table_privilege('steward_client', 'steward.invalidations', 'select') as read`);
    expect(rows[0]).toEqual({ enqueue: true, claim: false, read: false });
  });
});

describe("the queue functions' plans", () => {
  it("never JIT-compile: every function that disables seq scans also turns JIT off", async () => {
    // Up to PostgreSQL 17 a disabled seq scan costs 1e10, past every jit_*_above_cost: an enqueue
    // that checks sleeping_drainers was JIT-compiled on each call (100 to 200 ms on PostgreSQL 15).
    const { rows } = await context.db.pool.query<{ name: string; config: string[] }>(
      `select p.oid::regprocedure::text as name, p.proconfig as config
         from pg_proc p where p.pronamespace = 'steward'::regnamespace
          and p.proconfig @> array['enable_seqscan=off'] order by 1`,
    );
    expect(rows.map((row) => row.name)).toContain("steward.enqueue_invalidation(text,interval)");
    expect(rows.filter((row) => !row.config.includes("jit=off")).map((row) => row.name)).toEqual([]);
  });
});

describe("track_table", () => {
  it("enqueues each distinct tag once for a 100,000-row update", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.providers_samples (id bigint primary key, provider int, value int);
      insert into public.providers_samples select g, g % 7, 0 from generate_series(1, 100000) g;
      select steward.track_table('public.providers_samples', array['samples', 'samples:provider:{provider}']);
    `);
    await pool.query("delete from steward.invalidations");
    await pool.query("update public.providers_samples set value = value + 1");
    const { rows } = await pool.query(
      "select tag, count(*)::int as n from steward.invalidations group by tag order by tag",
    );
    expect(rows).toEqual([
      { tag: "samples", n: 1 },
      ...Array.from({ length: 7 }, (_, p) => ({ tag: `samples:provider:${p}`, n: 1 })).sort((a, b) =>
        a.tag.localeCompare(b.tag),
      ),
    ]);
  });

  it("fills placeholders from old and new rows, and enqueues nothing for a statement that changes no row", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.listings (id int primary key, owner text, price int);
      insert into public.listings values (1, 'ann', 10), (2, null, 20);
      select steward.track_table('public.listings', array['listing:{id}:owner:{owner}', 'all-listings']);
    `);
    await pool.query("delete from steward.invalidations");
    await pool.query("update public.listings set owner = 'bob' where id = 1");
    const tags = async () =>
      (await pool.query("select tag from steward.invalidations order by tag")).rows.map((r) => r.tag);
    expect(await tags()).toEqual(["all-listings", "listing:1:owner:ann", "listing:1:owner:bob"]);
    await pool.query("delete from steward.invalidations");
    await pool.query("update public.listings set price = 0 where id = 99");
    expect(await tags()).toEqual([]);
    // A row whose placeholder column is null yields no tag of that template.
    await pool.query("delete from public.listings where id = 2");
    expect(await tags()).toEqual(["all-listings"]);
  });

  it("never fails a write whose placeholder makes a tag too long: the statement leaves one dead letter, the other tags are enqueued", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.notes (id int primary key, title text);
      select steward.track_table('public.notes', array['note:{title}', 'notes']);
      delete from steward.invalidations;
      delete from steward.dead_letters where source = 'invalidation';
    `);
    const long = "x".repeat(1200);
    const tags = async () =>
      (await pool.query("select tag from steward.pending_invalidations order by tag")).rows.map((r) => r.tag);
    // A statement of a few rows, then one of many (track_table's bulk query): both paths.
    await pool.query("insert into public.notes values (1, $1), (2, 'short')", [long]);
    await pool.query("insert into public.notes select g, $1 || g from generate_series(3, 102) g", [long]);
    expect((await pool.query("select count(*)::int as n from public.notes")).rows[0].n).toBe(102);
    expect(await tags()).toEqual(["note:short", "notes"]);
    // One dead letter per statement, however many of its tags were too long (a writer must not
    // be able to make thousands with one insert); it names the table and counts them.
    const { rows } = await pool.query(
      `select payload->>'table' as "table", (payload->>'tags_too_long')::int as count, attempts, is_permanent, last_error
         from steward.dead_letters where source = 'invalidation' order by id`,
    );
    expect(rows).toEqual([
      {
        table: "public.notes",
        count: 1,
        attempts: 0,
        is_permanent: true,
        last_error:
          "a write to public.notes made 1 tag(s) longer than the queue's 1000 characters (the longest 1205); they were not enqueued",
      },
      expect.objectContaining({ table: "public.notes", count: 100 }),
    ]);
  });

  it("refuses a placeholder naming a column the table lacks, with the columns in the hint", async () => {
    const { pool } = context.db;
    await pool.query("create table public.widgets (id int, name text)");
    await expect(
      pool.query("select steward.track_table('public.widgets', array['widget:{nope}'])"),
    ).rejects.toMatchObject({
      code: "42703",
      hint: "Columns: id, name",
    });
    const { rows } = await pool.query(
      "select count(*)::int as n from pg_trigger where tgrelid = 'public.widgets'::regclass",
    );
    expect(rows[0].n).toBe(0);
  });

  it("untrack_table removes the triggers and says whether it did", async () => {
    const { pool } = context.db;
    await pool.query(
      "create table public.gadgets (id int); select steward.track_table('public.gadgets', array['gadgets'])",
    );
    expect((await pool.query("select steward.untrack_table('public.gadgets') as done")).rows[0].done).toBe(true);
    expect((await pool.query("select steward.untrack_table('public.gadgets') as done")).rows[0].done).toBe(false);
    await pool.query("delete from steward.invalidations; insert into public.gadgets values (1)");
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(0);
  });
});

describe("switching tracking off and on", () => {
  it("runs a switched-off table's writes as without pg-steward, enqueueing nothing, and tracks again when on", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.switch_items (id int primary key, v int);
      select steward.track_table('public.switch_items', array['items', 'item:{id}']);`);
    const tags = async () =>
      (await pool.query("select tag from steward.invalidations where tag like 'item%' order by tag")).rows.map(
        (row) => row.tag,
      );
    const verify = async () =>
      (
        await pool.query(
          "select status, detail from steward.verify_installation() where name = 'tracked table public.switch_items'",
        )
      ).rows[0];
    /** A write while another session holds steward's registry and queue locked: only a write running no steward code gets through. */
    const writeWhileStewardLocked = (statement: string) =>
      whileLocked(
        context.db,
        "lock table steward.tracked_tables, steward.invalidations in access exclusive mode",
        async () => {
          const client = await pool.connect();
          try {
            await client.query("set lock_timeout = '500ms'");
            await client.query(statement);
          } finally {
            await client.query("reset lock_timeout");
            client.release();
          }
        },
      );

    expect((await pool.query("select steward.disable_tracking('public.switch_items') as n")).rows[0].n).toBe(1);
    expect(await verify()).toMatchObject({ status: "warn", detail: expect.stringContaining("enable_tracking") });
    await writeWhileStewardLocked("insert into public.switch_items values (1, 0), (2, 0)");
    await writeWhileStewardLocked("update public.switch_items set v = 1");
    await writeWhileStewardLocked("delete from public.switch_items where id = 2");
    expect(await tags()).toEqual([]);

    expect((await pool.query("select steward.enable_tracking() as n")).rows[0].n).toBe(1);
    expect(await verify()).toMatchObject({ status: "ok" });
    await expect(writeWhileStewardLocked("update public.switch_items set v = 2")).rejects.toMatchObject({
      code: "55P03",
    });
    await pool.query("update public.switch_items set v = 3");
    expect(await tags()).toEqual(["item:1", "items"]);

    await pool.query("create table public.never_tracked (id int)");
    await expect(pool.query("select steward.disable_tracking('public.never_tracked')")).rejects.toMatchObject({
      code: "P0002",
      message: "table public.never_tracked is not tracked",
    });
    const { rows } = await pool.query(
      "select action, target from steward.audit_log where action like '%able_tracking' order by id",
    );
    expect(rows).toEqual([
      { action: "disable_tracking", target: "public.switch_items" },
      { action: "enable_tracking", target: "public.switch_items" },
    ]);
  });
});

describe("claiming and delivering", () => {
  it("delivers a claimed entry again after its visibility timeout when its drainer died", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    await pool.query("select steward.enqueue_invalidation('orphan')");
    const { rows } = await pool.query("select * from steward.claim_invalidations(10, '1 second')");
    expect(rows.map((r) => r.tag)).toEqual(["orphan"]);
    // The drainer "dies" here: no complete, no fail.
    expect((await pool.query("select * from steward.claim_invalidations(10, '1 second')")).rows).toEqual([]);
    const sink = recordingSink();
    await eventually(
      async () => {
        const batch = await drainBatch({
          pool,
          sinks: [sink],
          logger: testLogger(),
          batchSize: 10,
          visibilityMs: 60_000,
        });
        return batch.delivered;
      },
      { timeoutMs: 10_000, intervalMs: 200, what: "redelivery after the visibility timeout" },
    );
    expect(sink.received).toEqual([["orphan"]]);
    // Delivered entries are deleted.
    expect(
      (await pool.query("select count(*)::int as n from steward.invalidations where tag = 'orphan'")).rows[0].n,
    ).toBe(0);
  });

  it("never hands one entry to two concurrent claimers", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    await pool.query(
      "select steward.enqueue_invalidations(array(select 'many:' || g from generate_series(1, 2000) g))",
    );
    const batches = await Promise.all(
      Array.from({ length: 8 }, () =>
        pool.query("select id from steward.claim_invalidations(400)").then((r) => r.rows.map((x) => x.id)),
      ),
    );
    const all = batches.flat();
    expect(all.length).toBe(2000);
    expect(new Set(all).size).toBe(2000);
  });
});

describe("notify payloads", () => {
  it("splits tags into JSON arrays under pg_notify's 8000-byte limit, keeping every tag", () => {
    const tags = Array.from({ length: 500 }, (_, i) => `tenant:${i}:` + "x".repeat(100));
    const payloads = notifyPayloads(tags);
    expect(payloads.length).toBeGreaterThan(1);
    for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(8000);
    expect(payloads.flatMap((p) => JSON.parse(p))).toEqual(tags);
  });
});

describe("the notify sink", () => {
  it("sends each due tag to listeners once, in JSON arrays, as the entries are deleted", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const listener = new pg.Client({ connectionString: context.db.url });
    await listener.connect();
    const received: string[] = [];
    listener.on("notification", (message) => received.push(...JSON.parse(message.payload!)));
    await listener.query("listen steward_test_channel");
    try {
      await pool.query(
        "select steward.enqueue_invalidations(array(select 'note:' || g || ':' || repeat('y', 200) from generate_series(1, 300) g))",
      );
      await pool.query("select steward.enqueue_invalidation('later', '1 hour')");
      const { rows } = await pool.query("select * from steward.drain_notify(1000, 'steward_test_channel')");
      expect(rows).toEqual([{ delivered: 300, refreshes: 0, failed: 0 }]);
      await eventually(async () => received.length >= 300, { what: "300 notified tags" });
      expect(new Set(received).size).toBe(300);
      expect(received.every((tag) => tag.startsWith("note:"))).toBe(true);
      const { rows: left } = await pool.query("select tag from steward.invalidations");
      expect(left).toEqual([{ tag: "later" }]);
    } finally {
      await listener.end();
    }
  });
});

describe("mv: tags", () => {
  it("schedule a refresh of the registered view instead of going to the sinks", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.orders (id int primary key, customer int, amount int);
      create materialized view public.orders_by_customer as
        select customer, sum(amount) as total from public.orders group by customer;
      create unique index on public.orders_by_customer (customer);
      select steward.register_materialized_view('public.orders_by_customer');
      select steward.track_table('public.orders', array['mv:public.orders_by_customer', 'customer:{customer}']);
    `);
    await pool.query("delete from steward.invalidations");
    await pool.query("insert into public.orders values (1, 7, 100)");
    const sink = recordingSink();
    const batch = await drainBatch({ pool, sinks: [sink], logger: testLogger(), batchSize: 100, visibilityMs: 60_000 });
    expect(batch).toMatchObject({ delivered: 1, refreshes: 1 });
    expect(sink.received).toEqual([["customer:7"]]);
    const { rows } = await pool.query(
      `select j.payload->>'view' as view from graphile_worker._private_jobs j
         join graphile_worker._private_tasks t on t.id = j.task_id where t.identifier = 'refresh_materialized_view'`,
    );
    expect(rows).toEqual([{ view: "public.orders_by_customer" }]);
  });

  it("are refused at enqueue unless they are exactly mv:<schema>.<view> of a registered view (22023 naming the tag)", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const bad = [
      "mv:a.b.c",
      "mv:a.b.c.d",
      "mv:public.no_such_view",
      "mv:orders_by_customer",
      "mv:",
      'mv:"unterminated.x',
      "mv:public.orders",
    ];
    for (const tag of bad) {
      await expect(pool.query("select steward.enqueue_invalidation($1)", [tag]), tag).rejects.toMatchObject({
        code: "22023",
        message: `tag '${tag.replace(/'/g, "''")}' names no registered materialized view`,
        hint: expect.stringContaining("mv:<schema>.<view>"),
      });
    }
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(0);
    // Quoting and case are read as PostgreSQL reads names.
    for (const tag of [
      "mv:public.orders_by_customer",
      'mv:"public"."orders_by_customer"',
      "mv:Public.Orders_By_Customer",
    ]) {
      await pool.query("select steward.enqueue_invalidation($1)", [tag]);
    }
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(3);
    await pool.query("delete from steward.invalidations");
  });

  it("are checked by track_table, which refuses an unregistered view or a placeholder", async () => {
    const { pool } = context.db;
    await pool.query("create table public.order_lines (id int primary key, order_id int)");
    await expect(
      pool.query("select steward.track_table('public.order_lines', array['lines', 'mv:public.no_such_view'])"),
    ).rejects.toMatchObject({
      code: "22023",
      message: 'tag "mv:public.no_such_view" names no registered materialized view',
    });
    await expect(
      pool.query("select steward.track_table('public.order_lines', array['mv:public.orders_{order_id}'])"),
    ).rejects.toMatchObject({ code: "22023", message: expect.stringContaining("cannot be checked") });
    expect(
      (
        await pool.query(
          "select count(*)::int as n from steward.tracked_tables where target = 'public.order_lines'::regclass",
        )
      ).rows[0].n,
    ).toBe(0);
  });

  it("written behind enqueue's back go to the dead letters, and the others are delivered", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    // The owner can write the table directly; nothing checks these.
    await pool.query(`insert into steward.invalidations (tag, deliver_at)
      values ('mv:a.b.c', now()), ('mv:a.b.c.d', now()), ('mv:public.no_such_view', now()), ('good:1', now())`);
    const { rows } = await pool.query("select * from steward.drain_notify(10, 'steward_test')");
    expect(rows).toEqual([{ delivered: 1, refreshes: 0, failed: 3 }]);
    const { rows: dead } = await pool.query(
      "select payload->>'tag' as tag, attempts, last_error from steward.dead_letters where payload->>'tag' like 'mv:%' order by 1",
    );
    expect(dead).toEqual(
      ["mv:a.b.c", "mv:a.b.c.d", "mv:public.no_such_view"].map((tag) => ({
        tag,
        attempts: 1,
        last_error: `${tag} names no registered materialized view (mv:<schema>.<view>)`,
      })),
    );
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(0);
  });
});

describe("waking drainers", () => {
  it("notifies only while a drainer sleeps, once per transaction, and only for due entries", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const listener = new pg.Client({ connectionString: context.db.url });
    await listener.connect();
    let notifications = 0;
    listener.on("notification", () => notifications++);
    await listener.query("listen steward_invalidations");
    // A notification sent before this round trip has arrived once it returns.
    const settled = async () => (await listener.query("select 1"), notifications);
    try {
      await pool.query("select steward.enqueue_invalidation('wake:1')");
      expect(await settled()).toBe(0);

      await pool.query("select steward.drainer_sleeps('test drainer', '1 minute')");
      const client = await pool.connect();
      try {
        await client.query("begin");
        await client.query("select steward.enqueue_invalidation('wake:2')");
        await client.query("select steward.enqueue_invalidations(array['wake:3', 'wake:4'])");
        await client.query("commit");
      } finally {
        client.release();
      }
      await eventually(async () => notifications === 1, { what: "one notification for the transaction" });
      await pool.query("select steward.enqueue_invalidation('wake:later', '30 seconds')");
      expect(await settled()).toBe(1);

      await pool.query("select steward.drainer_wakes('test drainer')");
      await pool.query("select steward.enqueue_invalidation('wake:5')");
      expect(await settled()).toBe(1);
      // A drainer that died asleep stops counting when its sleep was due to end.
      await pool.query("select steward.drainer_sleeps('dead drainer', '-1 second')");
      await pool.query("select steward.enqueue_invalidation('wake:6')");
      expect(await settled()).toBe(1);
    } finally {
      await pool.query("delete from steward.sleeping_drainers");
      await listener.end();
    }
  });

  it("wakes the worker's drainer at once, without waiting for its poll", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const received: string[] = [];
    const drainer = new InvalidationDrainer({
      url: context.db.url,
      pool,
      sinks: [{ name: "recording", deliver: async (tags) => void received.push(...tags) }],
      logger: testLogger(),
      batchSize: 100,
      visibilityMs: 30_000,
      pollIntervalMs: 600_000,
    });
    await drainer.start();
    try {
      // Let the drainer find the queue empty and go to sleep for its (long) poll interval.
      await eventually(async () => (await sleepingDrainers(pool)) === 1, {
        what: "the drainer to fall asleep",
      });
      await pool.query("select steward.enqueue_invalidation('instant')");
      // Its poll is 10 minutes away: any delivery within the deadline came from the NOTIFY.
      await eventually(async () => received.includes("instant"), { what: "delivery after NOTIFY", timeoutMs: 20_000 });
    } finally {
      await drainer.stop();
    }
  });
});

describe("failures", () => {
  it("move an entry out of attempts to the dead letters, whence a replay queues its tag again", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    await withSettings(
      pool,
      { "invalidations.max_attempts": "2", "invalidations.backoff_base": "1 millisecond" },
      async () => {
        await pool.query("select steward.enqueue_invalidation('doomed')");
        for (let attempt = 1; attempt <= 2; attempt++) {
          const { rows } = await eventually(
            async () => {
              const result = await pool.query("select id from steward.claim_invalidations(10) where tag = 'doomed'");
              return result.rows.length ? result : undefined;
            },
            { what: `claim ${attempt}` },
          );
          await pool.query("select steward.fail_invalidations($1::bigint[], $2)", [
            [rows[0].id],
            `sink said no (${attempt})`,
          ]);
        }
      },
    );
    expect(
      (await pool.query("select count(*)::int as n from steward.invalidations where tag = 'doomed'")).rows[0].n,
    ).toBe(0);
    const { rows: dead } = await pool.query(
      "select id, attempts, max_attempts, last_error from steward.dead_letters where payload->>'tag' = 'doomed'",
    );
    expect(dead).toEqual([{ id: expect.anything(), attempts: 2, max_attempts: 2, last_error: "sink said no (2)" }]);
    await pool.query("select steward.replay_dead_letter($1)", [dead[0].id]);
    expect((await pool.query("select attempts from steward.invalidations where tag = 'doomed'")).rows).toEqual([
      { attempts: 0 },
    ]);
  });
});

describe("an idle drainer", () => {
  it("sleeps instead of polling the empty queue in a loop", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations; delete from steward.sleeping_drainers");
    // Counts the statements the drainer sends through its pool: pg_stat_database's commits
    // include other connections' statistics, which PostgreSQL 15+ reports up to 10 s late.
    const drainerPool = new pg.Pool({ connectionString: context.db.url, max: 2 });
    let statements = 0;
    const query = drainerPool.query.bind(drainerPool) as (...args: unknown[]) => Promise<unknown>;
    (drainerPool as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args) => {
      statements++;
      return query(...args);
    };
    const drainer = new InvalidationDrainer({
      url: context.db.url,
      pool: drainerPool,
      sinks: [{ name: "recording", deliver: async () => {} }],
      logger: testLogger(),
      batchSize: 100,
      visibilityMs: 30_000,
      pollIntervalMs: 60_000,
    });
    await drainer.start();
    try {
      // Asleep once its row is written: after it, the drainer sends one last claim and one look at
      // the next due entry, then sleeps. A fixed pause here was too short on a loaded machine.
      await eventually(async () => (await sleepingDrainers(pool)) === 1, { what: "the drainer to fall asleep" });
      const before = statements;
      await new Promise((resolve) => setTimeout(resolve, 1500));
      // A spinning drainer sends thousands of statements a second; a sleeping one none (at most
      // the two it sends right after its row is written).
      expect(statements - before).toBeLessThan(3);
    } finally {
      await drainer.stop();
      await drainerPool.end();
    }
  });
});
