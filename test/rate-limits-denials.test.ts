import { describe, expect, it } from "vitest";
import { RateLimiter } from "../src/client/rate-limits.ts";
import { testClock } from "./clock.ts";
import { runCli, withSettings } from "./helpers.ts";
import { useRateLimits } from "./rate-limit-calls.ts";

const limits = useRateLimits();
const { context, policy, hit, hits, burst, withClock } = limits;
const owner = (sql: string, values: unknown[] = []) => context.db.pool.query(sql, values);
const HOUR = 3_600_000;

/** steward_rate_limit_denials_total of one policy, by window ("60s": count). */
async function deniedByWindow(name: string): Promise<Record<string, number>> {
  const { rows } = await owner(
    "select labels->>'per' as per, value from steward.rate_limit_metrics() where labels->>'policy' = $1",
    [name],
  );
  return Object.fromEntries(rows.map((row) => [row.per, row.value]));
}

async function cleanupAll(client: { query: (sql: string) => Promise<{ rows: { n: string }[] }> }) {
  for (;;) {
    const n = Number((await client.query("select steward.cleanup_rate_limits(1000) as n")).rows[0]!.n);
    if (n < 1000) return;
  }
}

describe("rate-limit denials", () => {
  it("are counted per policy and per window, in the metric-source shape", async () => {
    const name = await policy([2, "1 minute"], [3, "1 hour"]);
    await burst(name, "a", 4);
    await burst(name, "b", 2);
    expect(await deniedByWindow(name)).toEqual({ "60s": 2, "3600s": 0 });
    const { rows } = await owner(
      "select metric, kind, labels from steward.rate_limit_metrics() where labels->>'policy' = $1 order by labels->>'per'",
      [name],
    );
    expect(rows).toEqual([
      { metric: "steward_rate_limit_denials_total", kind: "counter", labels: { policy: name, per: "3600s" } },
      { metric: "steward_rate_limit_denials_total", kind: "counter", labels: { policy: name, per: "60s" } },
    ]);
  });

  it("count a hit several windows refuse once, against the window that makes it wait longest", async () => {
    const name = await policy([2, "1 minute"], [2, "1 hour"]);
    await withClock(async (clock) => {
      // Both windows full: the hour (30 min to a unit) outweighs the minute (30 s).
      expect((await burst(name, "both", 3, 1, clock.client)).map((a) => a.allowed)).toEqual([true, true, false]);
      expect(await deniedByWindow(name)).toEqual({ "60s": 0, "3600s": 1 });
    });
  });

  it("are counted on the one-statement paths too: rate_limit_hit and the TypeScript client's batches", async () => {
    const name = await policy([1, "1 hour"]);
    await hit(name, "single");
    await hit(name, "single");
    const limiter = new RateLimiter(limits.app.pool);
    const decisions = await Promise.all(["x", "y", "x", "y"].map(() => limiter.hit(name, "batched")));
    expect(decisions.filter((d) => !d.allowed)).toHaveLength(3);
    expect(await deniedByWindow(name)).toEqual({ "3600s": 4 });
  });

  it("never fall when cleanup removes the state rows, nor when a window is replaced or dropped", async () => {
    const name = await policy([1, "1 second"], [5, "1 hour"]);
    const clock = await testClock(context.db.pool);
    try {
      await hits(Array(6).fill(name), ["k1", "k1", "k2", "k2", "k3", "k3"], undefined, clock.client);
      expect(await deniedByWindow(name)).toEqual({ "1s": 3, "3600s": 0 });
      await clock.advance(2000);
      await cleanupAll(clock.client);
      expect(await deniedByWindow(name)).toEqual({ "1s": 3, "3600s": 0 });
      await owner("select steward.set_rate_limit($1, 2, '1 second')", [name]);
      await hits(Array(3).fill(name), ["k1", "k1", "k1"], undefined, clock.client);
      expect(await deniedByWindow(name)).toEqual({ "1s": 4, "3600s": 0 });
      await owner("select steward.drop_rate_limit($1)", [name]);
      await cleanupAll(clock.client);
      expect(await deniedByWindow(name)).toEqual({ "1s": 4, "3600s": 0 });
    } finally {
      await clock.release();
    }
  });

  it("add no shared row: a denial waits for no transaction that holds another key", async () => {
    const name = await policy([1, "1 hour"]);
    await burst(name, "held", 1);
    await burst(name, "free", 1);
    const [holder, other] = await limits.app.connect(2);
    await holder!.query("begin");
    expect((await hit(name, "held", 1, holder!)).allowed).toBe(false);
    try {
      // With the holder's denial uncommitted, another key's denial goes through at once.
      await other!.query("set lock_timeout = '200ms'");
      expect((await hit(name, "free", 1, other!)).allowed).toBe(false);
      expect((await hits([name, name], ["free", "free"], undefined, other!)).map((a) => a.allowed)).toEqual([
        false,
        false,
      ]);
    } finally {
      await holder!.query("rollback");
    }
    expect(await deniedByWindow(name)).toEqual({ "3600s": 3 });
  });

  it("are counted exactly by 32 connections denying at once", async () => {
    const name = await policy([1, "1 hour"]);
    const keys = Array.from({ length: 8 }, (_, i) => `busy-${i}`);
    const clients = await limits.app.connect(32);
    await Promise.all(
      clients.map(async (client, i) => {
        for (let round = 0; round < 5; round++)
          await hits([name, name], [keys[i % 8]!, keys[(i + round) % 8]!], undefined, client);
      }),
    );
    // 320 hits on 8 keys of one place each: 8 admitted.
    expect(await deniedByWindow(name)).toEqual({ "3600s": 312 });
  });
});

describe("denials in steward status", () => {
  it("lists the most denied policies and keys of the last hour", async () => {
    const busy = await policy([1, "1 hour"]);
    const quiet = await policy([1, "1 hour"]);
    // The owner's clock: steward status is for operators, not for steward_client.
    const clock = await testClock(context.db.pool, { start: new Date(Date.UTC(2031, 0, 1, 10, 0)) });
    try {
      // Key user-i gets 2 + i hits of which one is admitted: 1 + i denials, 120 in all.
      for (let i = 0; i < 15; i++) await burst(busy, `user-${i}`, 2 + i, 1, clock.client);
      await burst(quiet, "user-0", 2, 1, clock.client);
      const { rows } = await clock.client.query("select steward.rate_limit_denial_summary(3) as summary");
      expect(rows[0].summary).toEqual({
        policies: [
          { policy: busy, denials: 120, by_window: { [`${busy}/3600s`]: 120 } },
          { policy: quiet, denials: 1, by_window: { [`${quiet}/3600s`]: 1 } },
        ],
        keys: [
          { policy: busy, key: "user-14", denials: 15 },
          { policy: busy, key: "user-13", denials: 14 },
          { policy: busy, key: "user-12", denials: 13 },
        ],
      });
    } finally {
      await clock.release();
    }
    const cli = await runCli(["status"], { DATABASE_URL: context.db.url });
    expect(cli.stdout).toMatch(/Rate-limit denials in the last hour/);
  });

  it("keeps counting once cleanup removes the rows, but only the most denied keys, and forgets them after the hour", async () => {
    const name = await policy([1, "1 second"]);
    const start = new Date(Date.UTC(2032, 0, 1, 10, 0));
    const clock = await testClock(context.db.pool, { start });
    const summary = async () =>
      (await clock.client.query("select steward.rate_limit_denial_summary(50) as s")).rows[0].s;
    try {
      for (let i = 0; i < 30; i++) await burst(name, `key-${i}`, 2 + i, 1, clock.client);
      await clock.advance(10_000);
      await withSettings(context.db.pool, { "rate_limits.denied_keys_kept": "5" }, () => cleanupAll(clock.client));
      expect(
        (
          await owner(
            "select count(*)::int as n from steward.rate_limit_state s join steward.rate_limit_windows w on w.id = s.window_id where w.policy = $1",
            [name],
          )
        ).rows[0].n,
      ).toBe(0);
      const kept = await summary();
      // Every denial still counts for the policy; the five most denied keys keep their names.
      expect(kept.policies.find((p: { policy: string }) => p.policy === name)).toEqual({
        policy: name,
        denials: 465,
        by_window: { [`${name}/1s`]: 465 },
      });
      expect(kept.keys.filter((k: { policy: string }) => k.policy === name).map((k: { key: string }) => k.key)).toEqual(
        ["key-29", "key-28", "key-27", "key-26", "key-25"],
      );
      // Half an hour into the next hour, half of the previous hour still counts.
      await clock.advance(HOUR + HOUR / 2 - 10_000);
      expect((await summary()).policies.find((p: { policy: string }) => p.policy === name).denials).toBe(233);
      await clock.advance(HOUR);
      await cleanupAll(clock.client);
      expect((await summary()).policies.find((p: { policy: string }) => p.policy === name)).toBeUndefined();
      expect(
        (
          await owner("select count(*)::int as n from steward.rate_limit_recent_denials where hour < $1", [
            Math.floor(clock.now.getTime() / HOUR) - 1,
          ])
        ).rows[0].n,
      ).toBe(0);
    } finally {
      await clock.release();
    }
  });
});
