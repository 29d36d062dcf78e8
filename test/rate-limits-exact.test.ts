import { describe, expect, it } from "vitest";
import { sqlError } from "./client-role.ts";
import { testClock } from "./clock.ts";
import { useRateLimits, type Answer } from "./rate-limit-calls.ts";

const limits = useRateLimits();
const { context, policy, hit, hits, burst, withClock } = limits;
const SECOND = 1000;

describe("exact windows", () => {
  it("refuses the 11th request within a minute however the 11 are spread, where GCRA admits it", async () => {
    const exact = await policy([10, "1 minute", "exact"]);
    const gcra = await policy([10, "1 minute"]);
    await withClock(async (clock) => {
      const answers: { exact: Answer; gcra: Answer }[] = [];
      const both = async () =>
        answers.push({
          exact: await hit(exact, "checklist", 1, clock.client),
          gcra: await hit(gcra, "checklist", 1, clock.client),
        });
      // Ten requests, one every 6 s: both admit them all.
      for (let i = 0; i < 10; i++) {
        await both();
        await clock.advance(6 * SECOND);
      }
      expect(answers.every((a) => a.exact.allowed && a.gcra.allowed)).toBe(true);
      // The 11th, 59.999 s after the first: GCRA has earned units back, the exact window has not.
      // The first leaves it 1 ms later; it is empty again when the 10th (at 54 s) leaves, 54.001 s later.
      await clock.advance(-6 * SECOND + 5999);
      await both();
      expect(answers[10]).toEqual({
        exact: { allowed: false, remaining: 0, retry_after_ms: 1, reset_ms: 54_001 },
        gcra: expect.objectContaining({ allowed: true }),
      });
      // A minute after the first, the first has left the window: one place.
      await clock.advance(1);
      expect(await hit(exact, "checklist", 1, clock.client)).toEqual({
        allowed: true,
        remaining: 0,
        retry_after_ms: 0,
        reset_ms: 60 * SECOND,
      });
      expect((await hit(exact, "checklist", 1, clock.client)).allowed).toBe(false);
    });
  });

  it("answers hits on one key within one call in order, each denied one waiting for the oldest to leave", async () => {
    const name = await policy([3, "10 seconds", "exact"]);
    await withClock(async (clock) => {
      const answers = await burst(name, "k", 5, 1, clock.client);
      expect(answers.map((a) => [a.allowed, a.remaining, a.retry_after_ms, a.reset_ms])).toEqual([
        [true, 2, 0, 10_000],
        [true, 1, 0, 10_000],
        [true, 0, 0, 10_000],
        [false, 0, 10_000, 10_000],
        [false, 0, 10_000, 10_000],
      ]);
    });
  });

  it("gives retry_after_ms as the moment the oldest counted hits leave, for any cost, and a denial consumes nothing", async () => {
    const name = await policy([3, "10 seconds", "exact"]);
    await withClock(async (clock) => {
      for (let i = 0; i < 3; i++) {
        expect((await hit(name, "costly", 1, clock.client)).allowed).toBe(true);
        await clock.advance(2 * SECOND);
      }
      // At 6 s, a hit of cost 2 needs the two oldest (at 0 s and 2 s) gone: at 12 s.
      for (let i = 0; i < 20; i++) {
        expect(await hit(name, "costly", 2, clock.client)).toMatchObject({
          allowed: false,
          retry_after_ms: 6 * SECOND,
        });
      }
      await clock.advance(6 * SECOND - 1);
      expect(await hit(name, "costly", 2, clock.client)).toMatchObject({ allowed: false, retry_after_ms: 1 });
      await clock.advance(1);
      expect(await hit(name, "costly", 2, clock.client)).toEqual({
        allowed: true,
        remaining: 0,
        retry_after_ms: 0,
        reset_ms: 10 * SECOND,
      });
    });
  });

  it("takes from an exact and a GCRA window of one policy all or nothing", async () => {
    const name = await policy([2, "10 seconds", "exact"], [3, "1 hour"]);
    await withClock(async (clock) => {
      const first = await burst(name, "mixed", 3, 1, clock.client);
      expect(first.map((a) => a.allowed)).toEqual([true, true, false]);
      // The exact window refused: the hour window kept its unit.
      expect(first[2]).toMatchObject({ window_limits: [2, 3], window_remaining: [0, 1], retry_after_ms: 10_000 });
      await clock.advance(10 * SECOND);
      const second = await burst(name, "mixed", 2, 1, clock.client);
      expect(second.map((a) => a.allowed)).toEqual([true, false]);
      // Now the hour window refused (its third unit came at 10 s: the next one is 1200 s - 10 s
      // away): the exact window kept its place.
      expect(second[1]).toMatchObject({ window_limits: [2, 3], window_remaining: [1, 0], retry_after_ms: 1_190_000 });
    });
  });

  it("admits exactly max_requests of 64 callers hammering one key", async () => {
    const name = await policy([10, "1 hour", "exact"]);
    const answers = await limits.hammer(name, "hot", 64, 3);
    const admitted = answers.filter((a) => a.allowed);
    expect(admitted).toHaveLength(10);
    expect(admitted.map((a) => a.remaining).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("admits exactly N of a burst of N+1 concurrent batches on new keys", async () => {
    const name = await policy([31, "1 hour", "exact"]);
    const clients = await limits.app.connect(32);
    const answers = await Promise.all(
      clients.map((client) => hits([name, name], ["fresh-a", "fresh-b"], undefined, client)),
    );
    for (const key of [0, 1]) expect(answers.filter((a) => a[key]!.allowed)).toHaveLength(31);
  });

  it("keeps at most max_requests times per key, and cleanup removes the row once the newest has left", async () => {
    const name = await policy([3, "10 seconds", "exact"]);
    const clock = await testClock(context.db.pool);
    const stored = async () =>
      (
        await context.db.pool.query(
          "select pg_catalog.cardinality(hits_us) as times from steward.rate_limit_state s join steward.rate_limit_windows w on w.id = s.window_id where w.policy = $1",
          [name],
        )
      ).rows;
    try {
      for (let i = 0; i < 40; i++) {
        await hits([name, name], ["bounded", "bounded"], undefined, clock.client);
        await clock.advance(1500);
      }
      expect(await stored()).toEqual([{ times: 3 }]);
      await clock.advance(10 * SECOND);
      for (;;) {
        const n = Number((await clock.client.query("select steward.cleanup_rate_limits(1000) as n")).rows[0].n);
        if (n < 1000) break;
      }
      expect(await stored()).toEqual([]);
    } finally {
      await clock.release();
    }
  });
});

describe("exact window administration", () => {
  it("refuses an exact window above 1000 requests and changes nothing", async () => {
    const count = async () =>
      Number((await context.db.pool.query("select count(*) from steward.rate_limit_windows")).rows[0].count);
    const before = await count();
    expect(
      await sqlError(context.db.pool.query("select steward.set_rate_limit('big', 1001, '1 hour', exact => true)")),
    ).toEqual({
      code: "22023",
      message: "an exact window admits at most 1000 requests, got 1001",
      hint: "An exact window keeps the time of every admitted hit of a key, 8 bytes each, rewritten on every hit; use a GCRA window (exact => false) for larger limits.",
    });
    expect(await count()).toBe(before);
    expect(
      await sqlError(context.db.pool.query("select steward.set_rate_limit('big', 10, '1 hour', null::boolean)")),
    ).toMatchObject({ code: "22004" });
  });

  it("starts a window afresh when it changes between GCRA and exact, and audits the change", async () => {
    const name = await policy([2, "1 hour"]);
    await burst(name, "switch", 2);
    expect((await hit(name, "switch")).allowed).toBe(false);
    await context.db.pool.query("select steward.set_rate_limit($1, 2, '1 hour', exact => true)", [name]);
    expect((await burst(name, "switch", 3)).map((a) => a.allowed)).toEqual([true, true, false]);
    const { rows } = await context.db.pool.query(
      "select detail from steward.audit_log where action = 'set_rate_limit' and target = $1 order by id",
      [name],
    );
    expect(rows.at(-1)!.detail).toEqual({
      max_requests: 2,
      per: "01:00:00",
      previous_max_requests: 2,
      exact: true,
      previous_exact: false,
    });
    // The SPEC's three arguments still set a GCRA window.
    await context.db.pool.query("select steward.set_rate_limit($1, 2, '1 hour')", [name]);
    const { rows: windows } = await context.db.pool.query(
      "select max_requests, is_exact from steward.rate_limit_windows where policy = $1",
      [name],
    );
    expect(windows).toEqual([{ max_requests: 2, is_exact: false }]);
  });
});
