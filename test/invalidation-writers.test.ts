// Writers of tracked tables: they never wait for each other, many at once get exactly the
// deliveries the queue promises, and bulk writes stay linear on a pooled (generic-plan) session.
import pg from "pg";
import { describe, expect, it } from "vitest";
import { drainUntilEmpty, InvalidationDrainer, type Sink } from "../src/worker/invalidations.ts";
import { eventually, testLogger, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

async function connect(settings: string[] = []): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: context.db.url });
  await client.connect();
  for (const setting of settings) await client.query(setting);
  return client;
}

async function queuedTags(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ tag: string }>("select distinct tag from steward.invalidations order by tag");
  return rows.map((row) => row.tag);
}

describe("writers of a tracked table", () => {
  const writes = {
    insert: (id: number) => `insert into public.shared_rows values (${id + 100}, 0)`,
    update: (id: number) => `update public.shared_rows set v = v + 1 where id = ${id}`,
    delete: (id: number) => `delete from public.shared_rows where id = ${id + 10}`,
  };

  it.each([
    ["a table-wide tag", ["shared"]],
    ["a per-row tag", ["shared:{id}"]],
    ["an mv: tag", ["mv:public.shared_summary"]],
    ["all three", ["shared", "shared:{id}", "mv:public.shared_summary"]],
  ])("never wait for another writer's open transaction, with %s (lock_timeout 1s)", async (_name, tags) => {
    const { pool } = context.db;
    await pool.query(`
      drop table if exists public.shared_rows cascade;
      create table public.shared_rows (id int primary key, v int not null);
      insert into public.shared_rows select g, 0 from generate_series(1, 20) g;
      create materialized view public.shared_summary as select count(*) as n, sum(v) as total from public.shared_rows;
      create unique index on public.shared_summary (n);
      select steward.register_materialized_view('public.shared_summary');`);
    await pool.query("select steward.track_table('public.shared_rows', $1::text[])", [tags]);
    await pool.query("delete from steward.invalidations");
    const first = await connect();
    const second = await connect(["set lock_timeout = '1s'"]);
    try {
      for (const [event, write] of Object.entries(writes)) {
        await first.query("begin");
        await first.query(write(1));
        // The first writer's transaction stays open while the second writes and commits.
        await expect(second.query(write(2)), event).resolves.toBeDefined();
        await first.query("commit");
      }
    } finally {
      await first.query("rollback").catch(() => undefined);
      await Promise.all([first.end(), second.end()]);
    }
    const expected = new Set(tags.filter((tag) => !tag.includes("{")));
    if (tags.includes("shared:{id}")) {
      for (const id of [1, 2, 101, 102, 11, 12]) expected.add(`shared:${id}`);
    }
    expect(await queuedTags(pool)).toEqual([...expected].sort());
    await pool.query("select steward.untrack_table('public.shared_rows')");
    await pool.query("select steward.unregister_materialized_view('public.shared_summary')");
  });

  it("never wait for an enqueue_invalidation of the same tag in an open transaction, nor for a drain", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const first = await connect();
    const second = await connect(["set lock_timeout = '1s'"]);
    try {
      await first.query("begin");
      await first.query("select steward.enqueue_invalidation('hot')");
      await expect(second.query("select steward.enqueue_invalidation('hot')")).resolves.toBeDefined();
      await first.query("commit");
      // A drain holds the rows it takes until it commits; enqueues of those tags go on.
      await first.query("begin");
      await first.query("select * from steward.drain_notify(100, 'steward_test')");
      await expect(second.query("select steward.enqueue_invalidation('hot')")).resolves.toBeDefined();
      await first.query("commit");
    } finally {
      await first.query("rollback").catch(() => undefined);
      await Promise.all([first.end(), second.end()]);
    }
    // The enqueue made during the drain is pending: a write after a claim gets a later delivery.
    expect(await queuedTags(pool)).toEqual(["hot"]);
    await pool.query("delete from steward.invalidations");
  });
});

describe("16 concurrent writers", () => {
  const WRITERS = 16;
  const ROWS_EACH = 8;

  async function setup(pool: pg.Pool) {
    await pool.query(`
      drop table if exists public.accounts;
      create table public.accounts (id int primary key, v int not null);
      insert into public.accounts select g, 0 from generate_series(1, ${WRITERS * ROWS_EACH}) g;
      select steward.track_table('public.accounts', array['accounts', 'account:{id}']);
      delete from steward.invalidations;`);
  }

  /** Each writer commits single-row updates of its own rows until the time is up. */
  async function write(ms: number): Promise<{ writes: Map<number, number>; errors: unknown[] }> {
    const clients = await Promise.all(Array.from({ length: WRITERS }, () => connect(["set lock_timeout = '1s'"])));
    const writes = new Map<number, number>();
    const errors: unknown[] = [];
    const deadline = Date.now() + ms;
    try {
      await Promise.all(
        clients.map(async (client, writer) => {
          for (let i = 0; Date.now() < deadline; i++) {
            const id = writer * ROWS_EACH + 1 + (i % ROWS_EACH);
            try {
              await client.query("update public.accounts set v = v + 1 where id = $1", [id]);
              writes.set(id, (writes.get(id) ?? 0) + 1);
            } catch (error) {
              errors.push(error);
            }
          }
        }),
      );
    } finally {
      await Promise.all(clients.map((client) => client.end()));
    }
    return { writes, errors };
  }

  it("give exactly one delivery per written tag when they all commit before the drain", async () => {
    const { pool } = context.db;
    await setup(pool);
    const { writes, errors } = await write(2000);
    expect(errors).toEqual([]);
    const total = [...writes.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(WRITERS * ROWS_EACH);
    // Every write appended its rows; nothing was folded yet.
    expect(
      (await pool.query("select count(*)::int as n from steward.invalidations where tag = 'accounts'")).rows[0].n,
    ).toBe(total);

    const delivered: string[] = [];
    const sink: Sink = { name: "recording", deliver: async (tags) => void delivered.push(...tags) };
    await drainUntilEmpty({ pool, sinks: [sink], logger: testLogger(), batchSize: 50, visibilityMs: 60_000 }, 60_000);
    const expected = ["accounts", ...[...writes.keys()].map((id) => `account:${id}`)].sort();
    expect([...delivered].sort()).toEqual(expected);
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(0);
  });

  it.each(["webhook-like (claim, deliver, complete)", "notify (drain_notify)"])(
    "leave no cache stale when drained while they write, through the %s path",
    async (path) => {
      const { pool } = context.db;
      await setup(pool);
      // A cache that refills on each delivery: it reads the value a client would read then.
      const reader = await connect();
      const cache = new Map<string, number>();
      const deliveries = new Map<string, number>();
      const refill = async (tags: string[]) => {
        for (const tag of tags) {
          deliveries.set(tag, (deliveries.get(tag) ?? 0) + 1);
          const { rows } =
            tag === "accounts"
              ? await reader.query("select sum(v)::int as v from public.accounts")
              : await reader.query("select v from public.accounts where id = $1", [Number(tag.split(":")[1])]);
          cache.set(tag, rows[0].v);
        }
      };
      const listener = await connect();
      let notified = Promise.resolve();
      listener.on("notification", (message) => {
        notified = notified.then(() => refill(JSON.parse(message.payload!) as string[]));
      });
      await listener.query("listen steward_writers_test");
      const sink: Sink = path.startsWith("notify")
        ? { name: "notify", notifyChannel: "steward_writers_test", deliver: async () => {} }
        : { name: "recording", deliver: refill };
      const drainer = new InvalidationDrainer({
        url: context.db.url,
        pool,
        sinks: [sink],
        logger: testLogger(),
        batchSize: 100,
        visibilityMs: 30_000,
        pollIntervalMs: 100,
      });
      await drainer.start();
      let result: Awaited<ReturnType<typeof write>>;
      try {
        result = await write(3000);
        await eventually(
          async () => (await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n === 0,
          {
            what: "an empty queue",
          },
        );
      } finally {
        await drainer.stop();
      }
      // Notifications of the last drain reach the listener after its commit.
      await eventually(
        async () => {
          await notified;
          const { rows } = await pool.query("select id, v from public.accounts");
          return rows.every((row) => !result.writes.has(row.id) || cache.get(`account:${row.id}`) === row.v);
        },
        { what: "every written row's cache entry to hold its last value" },
      );
      await notified;
      await Promise.all([listener.end(), reader.end()]);

      expect(result.errors).toEqual([]);
      const { rows } = await pool.query("select id, v from public.accounts order by id");
      for (const row of rows) {
        if (result.writes.has(row.id)) expect(cache.get(`account:${row.id}`), `account:${row.id}`).toBe(row.v);
        // Never more deliveries of a tag than writes of it: writes before a claim share one.
        expect(deliveries.get(`account:${row.id}`) ?? 0).toBeLessThanOrEqual(result.writes.get(row.id) ?? 0);
      }
      expect(cache.get("accounts")).toBe(rows.reduce((sum, row) => sum + row.v, 0));
    },
  );
});

describe("bulk tracking on a pooled session", () => {
  /** Milliseconds of one 50,000-row update on `client`. */
  async function bulkUpdate(client: pg.Client): Promise<number> {
    const began = performance.now();
    await client.query("update public.bulk_rows set v = v + 1");
    return performance.now() - began;
  }

  it(
    "stays linear after the session's plans went generic: within 1.5 times a fresh session's time",
    { timeout: 120_000 },
    async () => {
      const { pool } = context.db;
      await pool.query(`
      create table public.bulk_rows (id int primary key, v int not null);
      insert into public.bulk_rows select g, 0 from generate_series(1, 50000) g;
      select steward.track_table('public.bulk_rows', array['bulk', 'bulk:{id}']);`);
      const fresh: number[] = [];
      const warm: number[] = [];
      for (let round = 0; round < 3; round++) {
        for (const side of round % 2 ? ["warm", "fresh"] : ["fresh", "warm"]) {
          await pool.query("vacuum public.bulk_rows");
          // Ten small tracked writes, and generic plans forced, as in a pool's hours-old session.
          const client = await connect(side === "warm" ? ["set plan_cache_mode = force_generic_plan"] : []);
          try {
            if (side === "warm") {
              for (let i = 1; i <= 10; i++)
                await client.query("update public.bulk_rows set v = v + 1 where id = $1", [i]);
            }
            // As a drainer would have: the bulk write finds an empty queue.
            await pool.query("delete from steward.invalidations");
            (side === "warm" ? warm : fresh).push(await bulkUpdate(client));
          } finally {
            await client.end();
          }
        }
      }
      // The fastest of each: another process on the machine can only add time. (A plan gone
      // quadratic took 9 times as long in a warm session.)
      expect(Math.min(...warm), `fresh ${fresh.map(Math.round)} ms, warm ${warm.map(Math.round)} ms`).toBeLessThan(
        Math.min(...fresh) * 1.5,
      );
      expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(50_001);
      await pool.query("delete from steward.invalidations");
    },
  );
});

describe("what track_table captures", () => {
  it("no rows at all for fixed tags: every statement enqueues them, even one that changed no row", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.settings_rows (id int primary key, v int);
      select steward.track_table('public.settings_rows', array['settings']);
      delete from steward.invalidations;`);
    const { rows: triggers } = await pool.query(
      `select tgname, tgoldtable, tgnewtable from pg_trigger where tgrelid = 'public.settings_rows'::regclass order by tgname`,
    );
    expect(triggers).toEqual(
      ["steward_invalidate_delete", "steward_invalidate_insert", "steward_invalidate_update"].map((tgname) => ({
        tgname,
        tgoldtable: null,
        tgnewtable: null,
      })),
    );
    await pool.query("update public.settings_rows set v = 1 where id = 42");
    expect(await queuedTags(pool)).toEqual(["settings"]);
    await pool.query("delete from steward.invalidations");
  });

  it("new rows for inserts, old rows for deletes, both for updates when a tag has a placeholder", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.samples (id int primary key, provider int, value int);
      insert into public.samples select g, g % 3, 0 from generate_series(1, 30) g;
      select steward.track_table('public.samples', array['samples', 'provider:{provider}']);
      delete from steward.invalidations;`);
    const { rows: triggers } = await pool.query(
      `select tgname, tgoldtable, tgnewtable from pg_trigger where tgrelid = 'public.samples'::regclass order by tgname`,
    );
    expect(triggers).toEqual([
      { tgname: "steward_invalidate_delete", tgoldtable: "old_rows", tgnewtable: null },
      { tgname: "steward_invalidate_insert", tgoldtable: null, tgnewtable: "new_rows" },
      { tgname: "steward_invalidate_update", tgoldtable: "old_rows", tgnewtable: "new_rows" },
    ]);
    await pool.query("update public.samples set value = value + 1 where provider = 1");
    expect(await queuedTags(pool)).toEqual(["provider:1", "samples"]);
    await pool.query("delete from steward.invalidations");
    // Moving rows from provider 2 to 0, few (one statement per row) and many at once: both the
    // old and the new provider change.
    await pool.query("update public.samples set provider = 0 where id = 2");
    expect(await queuedTags(pool)).toEqual(["provider:0", "provider:2", "samples"]);
    await pool.query("delete from steward.invalidations");
    await pool.query("update public.samples set provider = 0 where provider = 2");
    expect(await queuedTags(pool)).toEqual(["provider:0", "provider:2", "samples"]);
    await pool.query("delete from steward.invalidations");
  });

  it("old and new rows for an update of a partitioned table, where a row may move between partitions", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.events (id int, region text, primary key (id, region)) partition by list (region);
      create table public.events_eu partition of public.events for values in ('eu');
      create table public.events_us partition of public.events for values in ('us');
      insert into public.events values (1, 'eu'), (2, 'us');
      select steward.track_table('public.events', array['events:{region}']);
      delete from steward.invalidations;`);
    await pool.query("update public.events set region = 'us' where id = 1");
    expect(await queuedTags(pool)).toEqual(["events:eu", "events:us"]);
    await pool.query("delete from steward.invalidations");
  });

  it("renders placeholder values the same way for a statement of one row and of many", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.flags (id int primary key, active boolean, since date, score numeric, ref uuid);
      select steward.track_table('public.flags', array['flag:{active}:{since}:{score}:{ref}']);
      delete from steward.invalidations;`);
    const values = "true, '2026-01-02', 1.50, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'";
    // One row: filled row by row. Forty rows: the distinct-first query.
    await pool.query(`insert into public.flags values (1, ${values})`);
    const one = await queuedTags(pool);
    await pool.query("delete from steward.invalidations");
    await pool.query(`insert into public.flags select g, ${values} from generate_series(2, 41) g`);
    expect(await queuedTags(pool)).toEqual(one);
    expect(one).toEqual(["flag:true:2026-01-02:1.50:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]);
    await pool.query("delete from steward.invalidations");
  });
});
