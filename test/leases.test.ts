import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LeaseUnavailableError, Leases } from "../src/client/leases.ts";
import { createClientRole, sqlError, type ClientRole } from "./client-role.ts";
import { testClock } from "./clock.ts";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let app: ClientRole;
beforeAll(async () => {
  app = await createClientRole(context.db);
});
afterAll(async () => {
  await app?.drop();
});

async function acquire(
  key: string,
  max: number,
  ttl = "60 seconds",
  client: pg.Pool | pg.Client = app.pool,
): Promise<string | null> {
  const { rows } = await client.query("select steward.lease_acquire($1, $2, $3::interval) as lease", [key, max, ttl]);
  return rows[0].lease;
}
async function release(lease: string | null): Promise<boolean> {
  return (await app.pool.query("select steward.lease_release($1) as released", [lease])).rows[0].released;
}
const liveLeases = async (key: string) =>
  Number(
    (
      await context.db.pool.query(
        "select count(*) from steward.leases where key = $1 and expires_at > clock_timestamp()",
        [key],
      )
    ).rows[0].count,
  );

describe("lease_acquire", () => {
  it("grants exactly max_concurrent of 64 concurrent acquisitions", async () => {
    const clients = await app.connect(64);
    const leases = await Promise.all(clients.map((client) => acquire("busy", 5, "60 seconds", client)));
    expect(leases.filter((lease) => lease !== null)).toHaveLength(5);
    expect(new Set(leases.filter(Boolean)).size).toBe(5);
    expect(await liveLeases("busy")).toBe(5);
  });

  it("frees a slot on release, and release says whether it released one", async () => {
    const first = await acquire("door", 1);
    expect(first).not.toBeNull();
    expect(await acquire("door", 1)).toBeNull();
    expect(await release(first)).toBe(true);
    expect(await release(first)).toBe(false);
    expect(await release("00000000-0000-0000-0000-000000000000")).toBe(false);
    expect(await release(null)).toBe(false);
    expect(await acquire("door", 1)).not.toBeNull();
  });

  it("counts an expired lease for nothing: a crashed holder frees its slot after its ttl", async () => {
    const holder = (await app.connect(1))[0]!;
    const pid = (await holder.query("select pg_backend_pid() as pid")).rows[0].pid;
    const lease = await acquire("crashy", 1, "3 seconds", holder);
    expect(lease).not.toBeNull();
    await context.db.pool.query("select pg_terminate_backend($1)", [pid]);
    const { rows } = await context.db.pool.query<{ acquired_at: Date }>(
      "select acquired_at from steward.leases where id = $1",
      [lease],
    );
    const acquiredAt = rows[0]!.acquired_at.getTime();
    const clock = await testClock(context.db.pool, { role: app.name });
    try {
      await clock.set(new Date(acquiredAt + 2999));
      expect(await acquire("crashy", 1, "60 seconds", clock.client)).toBeNull();
      // No cleanup runs: the expired row is still there and simply stops counting.
      await clock.set(new Date(acquiredAt + 3001));
      const next = await acquire("crashy", 1, "60 seconds", clock.client);
      expect(next).not.toBeNull();
      expect(next).not.toBe(lease);
      expect(
        Number((await context.db.pool.query("select count(*) from steward.leases where key = 'crashy'")).rows[0].count),
      ).toBe(2);
      const { rows: released } = await clock.client.query("select steward.lease_release($1) as released", [lease]);
      expect(released).toEqual([{ released: false }]);
    } finally {
      await clock.release();
    }
  });
});

describe("lease_acquire in REPEATABLE READ", () => {
  it("fails with 40001 instead of counting an old snapshot", async () => {
    const [first, second] = await app.connect(2);
    await second!.query("begin isolation level repeatable read");
    await second!.query("select 1");
    expect(await acquire("snapshot", 1, "60 seconds", first!)).not.toBeNull();
    expect((await sqlError(acquire("snapshot", 1, "60 seconds", second!))).code).toBe("40001");
    await second!.query("rollback");
    expect(await acquire("snapshot", 1, "60 seconds", second!)).toBeNull();
  });
});

describe("Leases.withLease", () => {
  it("releases after the work succeeds and after it throws", async () => {
    const leases = new Leases(app.pool);
    expect(await leases.withLease("job", 1, async (lease) => (await liveLeases("job")) + lease.length)).toBe(37);
    expect(await liveLeases("job")).toBe(0);
    await expect(
      leases.withLease("job", 1, async () => {
        throw new Error("work failed");
      }),
    ).rejects.toThrow("work failed");
    expect(await liveLeases("job")).toBe(0);
  });

  it("throws LeaseUnavailableError, without running the work, when every slot is held", async () => {
    const leases = new Leases(app.pool);
    const held = await leases.acquire("full", 2);
    const alsoHeld = await leases.acquire("full", 2);
    let ran = false;
    const error = await leases
      .withLease("full", 2, async () => {
        ran = true;
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseUnavailableError);
    expect(error).toMatchObject({ code: "LEASE_UNAVAILABLE", key: "full", maxConcurrent: 2 });
    expect(ran).toBe(false);
    expect(await leases.release(held!)).toBe(true);
    expect(await leases.release(alsoHeld!)).toBe(true);
  });
});

describe("lease arguments and privileges", () => {
  it.each([
    ["an empty key", "", 1, "1 minute", "22023", "lease key must not be empty"],
    ["a zero max_concurrent", "k", 0, "1 minute", "22023", "max_concurrent must be positive, got 0"],
    ["a negative max_concurrent", "k", -1, "1 minute", "22023", "max_concurrent must be positive, got -1"],
    ["a zero ttl", "k", 1, "0 seconds", "22023", "ttl must be a positive interval, got 00:00:00"],
    ["a negative ttl", "k", 1, "-5 seconds", "22023", "ttl must be a positive interval, got -00:00:05"],
    ["a null key", null, 1, "1 minute", "22004", "lease_acquire needs a key, max_concurrent and ttl"],
  ])("lease_acquire refuses %s and changes nothing", async (_what, key, max, ttl, code, message) => {
    const count = async () =>
      Number(
        (
          await context.db.pool.query(
            "select (select count(*) from steward.leases) + (select count(*) from steward.lease_keys) as n",
          )
        ).rows[0].n,
      );
    const before = await count();
    expect(
      await sqlError(app.pool.query("select steward.lease_acquire($1, $2, $3::interval)", [key, max, ttl])),
    ).toMatchObject({ code, message });
    expect(await count()).toBe(before);
  });

  it("lets steward_client acquire and release, and read nothing", async () => {
    for (const statement of [
      "select * from steward.leases",
      "select * from steward.lease_keys",
      "delete from steward.leases",
      "select steward.cleanup_leases(10)",
    ]) {
      expect((await sqlError(app.pool.query(statement))).code, statement).toBe("42501");
    }
  });
});

describe("lease cleanup", () => {
  it("removes expired leases and idle keys in bounded batches, and keeps held ones", async () => {
    for (const key of ["old-1", "old-2", "old-3"]) await acquire(key, 1, "1 minute");
    const kept = await acquire("kept", 1, "1 hour");
    const clock = await testClock(context.db.pool);
    const removed: number[] = [];
    try {
      await clock.advance(61_000);
      for (;;) {
        const count = Number((await clock.client.query("select steward.cleanup_leases(2) as n")).rows[0].n);
        removed.push(count);
        if (count < 2) break;
      }
      const { rows } = await clock.client.query("select id from steward.leases where expires_at <= steward.clock()");
      expect(rows).toEqual([]);
    } finally {
      await clock.release();
    }
    expect(removed[0]).toBe(2);
    expect((await context.db.pool.query("select key from steward.lease_keys where key like 'old-%'")).rows).toEqual([]);
    expect(await release(kept)).toBe(true);
  });
});
