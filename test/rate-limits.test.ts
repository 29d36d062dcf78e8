import { describe, expect, it } from "vitest";
import { sqlError } from "./client-role.ts";
import { testClock } from "./clock.ts";
import { useRateLimits, type Answer, type BatchAnswer } from "./rate-limit-calls.ts";

const limits = useRateLimits();
const { context, policy, hit, hits, burst, withClock } = limits;

describe("rate_limit_hit", () => {
  it("admits a burst of max_requests, then denies with retry_after = per / max_requests", async () => {
    const name = await policy([5, "10 seconds"]);
    const answers = await burst(name, "alice", 6);
    expect(answers.map((a) => a.allowed)).toEqual([true, true, true, true, true, false]);
    expect(answers.map((a) => a.remaining)).toEqual([4, 3, 2, 1, 0, 0]);
    expect(answers.map((a) => a.reset_ms)).toEqual([2000, 4000, 6000, 8000, 10000, 10000]);
    expect(answers.map((a) => a.retry_after_ms)).toEqual([0, 0, 0, 0, 0, 2000]);
  });

  it("answers a single hit from the window's own clock: reset is exactly one emission interval", async () => {
    const name = await policy([4, "2 seconds"]);
    expect(await hit(name, "bob")).toEqual({ allowed: true, remaining: 3, retry_after_ms: 0, reset_ms: 500 });
  });

  it("denied hits consume nothing: after retry_after_ms the next hit is admitted", async () => {
    const name = await policy([2, "2 seconds"]);
    await withClock(async (clock) => {
      const answers = await burst(name, "carol", 22, 1, clock.client);
      expect(answers.filter((a) => a.allowed)).toHaveLength(2);
      // Twenty denials in a row, each still one emission interval from a free unit.
      expect(new Set(answers.slice(2).map((a) => a.retry_after_ms))).toEqual(new Set([1000]));
      await clock.advance(999);
      expect(await hit(name, "carol", 1, clock.client)).toMatchObject({ allowed: false, retry_after_ms: 1 });
      await clock.advance(1);
      expect(await hit(name, "carol", 1, clock.client)).toMatchObject({ allowed: true, remaining: 0 });
    });
  });

  it("retry_after_ms is the wait after which the same hit succeeds, for any cost", async () => {
    const name = await policy([3, "3 seconds"]);
    await withClock(async (clock) => {
      const denied = (await hits([name, name, name, name], Array(4).fill("dave"), [1, 1, 1, 2], clock.client))[3]!;
      // Two units are needed right after a full burst: two emission intervals.
      expect(denied).toMatchObject({ allowed: false, retry_after_ms: 2000 });
      await clock.advance(denied.retry_after_ms - 1);
      expect(await hit(name, "dave", 2, clock.client)).toMatchObject({ allowed: false, retry_after_ms: 1 });
      await clock.advance(1);
      expect(await hit(name, "dave", 2, clock.client)).toMatchObject({ allowed: true, remaining: 0 });
    });
  });

  it("needs room in every window and takes from all or none of them", async () => {
    const name = await policy([10, "1 second"], [3, "1 hour"]);
    const answers = await burst(name, "erin", 4);
    expect(answers.map((a) => a.allowed)).toEqual([true, true, true, false]);
    // Windows shortest first; the denied hit left the second-long window untouched (7 of 10 left).
    expect(answers[2]).toMatchObject({ window_limits: [10, 3], window_remaining: [7, 0] });
    expect(answers[3]).toMatchObject({ window_limits: [10, 3], window_remaining: [7, 0], remaining: 0 });
    expect(answers[3]!.retry_after_ms).toBe(1_200_000);

    // The other way round: the short window refuses, the long one keeps its units.
    const other = await policy([2, "1 hour"], [5, "1 day"]);
    const second = await burst(other, "erin", 3);
    expect(second.map((a) => a.allowed)).toEqual([true, true, false]);
    expect(second[2]).toMatchObject({ window_remaining: [0, 3], remaining: 0, retry_after_ms: 1_800_000 });
  });

  it("applies hits on one key within one call in order", async () => {
    const name = await policy([4, "1 hour"]);
    const answers = await hits([name, name, name, name], ["frank", "frank", "frank", "frank"], [2, 1, 2, 1]);
    expect(answers.map((a) => [a.allowed, a.remaining])).toEqual([
      [true, 2],
      [true, 1],
      [false, 1],
      [true, 0],
    ]);
  });

  it("allows no second burst at a window boundary: after a full burst, one unit per emission interval", async () => {
    const name = await policy([4, "2 seconds"]);
    await withClock(async (clock) => {
      expect((await burst(name, "grace", 4, 1, clock.client)).every((a) => a.allowed)).toBe(true);
      // 500 ms per unit since the burst: 1.2 s later two units have come back, not a new burst of
      // four; a fixed window restarting at 2 s would admit none here and then 4 at once.
      await clock.advance(1200);
      expect((await burst(name, "grace", 4, 1, clock.client)).map((a) => a.allowed)).toEqual([
        true,
        true,
        false,
        false,
      ]);
      // At the 2 s boundary: the 800 ms since then and 200 ms left over make two units, not a fresh burst.
      await clock.advance(800);
      expect((await burst(name, "grace", 4, 1, clock.client)).map((a) => a.allowed)).toEqual([
        true,
        true,
        false,
        false,
      ]);
    });
  });

  it("gives the same answers through the one-statement path and the general path", async () => {
    const name = await policy([5, "1 hour"]);
    const single: Answer[] = [];
    for (let i = 0; i < 7; i++) single.push(await hit(name, "henry"));
    const batched = await burst(name, "irene", 7);
    expect(batched.map((a) => [a.allowed, a.remaining])).toEqual(single.map((a) => [a.allowed, a.remaining]));
    expect(batched.at(-1)!.retry_after_ms).toBe(720_000);
    expect(single.at(-1)!.retry_after_ms).toBeGreaterThan(700_000);
    expect(single.at(-1)!.retry_after_ms).toBeLessThanOrEqual(720_000);
  });
});

describe("rate_limit_hit under concurrency", () => {
  it("admits exactly max_requests of 64 callers hammering one key", async () => {
    const name = await policy([10, "1 hour"]);
    const answers = await limits.hammer(name, "hot", 64, 3);
    const admitted = answers.filter((a) => a.allowed);
    expect(answers).toHaveLength(192);
    expect(admitted).toHaveLength(10);
    // Each admitted caller saw its own place in the burst.
    expect(admitted.map((a) => a.remaining).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("admits exactly N of a burst of N+1 concurrent hits on a new key", async () => {
    const name = await policy([63, "1 hour"]);
    const clients = await limits.app.connect(64);
    const answers = await Promise.all(clients.map((client) => hit(name, "fresh", 1, client)));
    expect(answers.filter((a) => a.allowed)).toHaveLength(63);
  });

  it("runs concurrent batches over shared keys without deadlock and counts every key exactly", async () => {
    const name = await policy([7, "1 hour"]);
    const keys = Array.from({ length: 20 }, (_, i) => `shared-${i}`);
    const clients = await limits.app.connect(16);
    const answers = (
      await Promise.all(
        clients.map(async (client, index) => {
          const mine: { key: string; answer: BatchAnswer }[] = [];
          for (let round = 0; round < 3; round++) {
            // Odd clients send one hit per key (one-statement path), even ones repeat keys in
            // random order (general path): both lock through the same rows.
            const batch =
              index % 2
                ? [...keys].sort(() => Math.random() - 0.5)
                : Array.from({ length: 60 }, () => keys[Math.floor(Math.random() * keys.length)]!);
            const result = await hits(Array(batch.length).fill(name), batch, undefined, client);
            result.forEach((answer) => mine.push({ key: batch[answer.hit - 1]!, answer }));
          }
          return mine;
        }),
      )
    ).flat();
    for (const key of keys) {
      const admitted = answers.filter((a) => a.key === key && a.answer.allowed);
      expect(admitted.map((a) => a.answer.remaining).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    }
    expect(answers.every((a) => a.answer.error_code === null)).toBe(true);
  });
});

describe("rate_limit_hit in REPEATABLE READ", () => {
  it.each([
    ["one window (one statement)", [[2, "1 hour"]]],
    [
      "two windows (general path)",
      [
        [2, "1 hour"],
        [5, "1 day"],
      ],
    ],
  ] as [string, [number, string][]][])(
    "fails with 40001 instead of deciding on an old snapshot: %s",
    async (_what, windows) => {
      const name = await policy(...windows);
      const [first, second] = await limits.app.connect(2);
      await hit(name, "snapshot", 1, first!);
      await second!.query("begin isolation level repeatable read");
      await second!.query("select 1");
      await hit(name, "snapshot", 1, first!);
      expect((await sqlError(hit(name, "snapshot", 1, second!))).code).toBe("40001");
      await second!.query("rollback");
      expect((await hit(name, "snapshot", 1, second!)).allowed).toBe(false);
    },
  );
});

describe("rate-limit arguments", () => {
  const stateRows = async () =>
    Number((await context.db.pool.query("select count(*) from steward.rate_limit_state")).rows[0].count);
  const windowRows = async () =>
    (await context.db.pool.query("select policy, max_requests, per_us from steward.rate_limit_windows order by id"))
      .rows;
  const auditRows = async () =>
    Number((await context.db.pool.query("select count(*) from steward.audit_log")).rows[0].count);

  it.each([
    ["a zero limit", "api", 0, "1 minute", "22023", "max_requests must be positive, got 0"],
    ["a negative limit", "api", -5, "1 minute", "22023", "max_requests must be positive, got -5"],
    ["a zero interval", "api", 10, "0 seconds", "22023", "per must be a positive interval, got 00:00:00"],
    ["a negative interval", "api", 10, "-1 minute", "22023", "per must be a positive interval, got -00:01:00"],
    ["an empty policy name", "", 10, "1 minute", "22023", 'policy name "" is not allowed'],
    ["a policy name with spaces", "my api", 10, "1 minute", "22023", 'policy name "my api" is not allowed'],
    [
      "a window too large to count exactly",
      "api",
      2_000_000_000,
      "1 year",
      "22023",
      "a window of 2000000000 per 1 year is too large",
    ],
  ])("set_rate_limit refuses %s and changes nothing", async (_what, name, max, per, code, message) => {
    const [windows, audits] = [await windowRows(), await auditRows()];
    const error = await sqlError(
      context.db.pool.query("select steward.set_rate_limit($1, $2, $3::interval)", [name, max, per]),
    );
    expect(error).toMatchObject({ code, message });
    expect(await windowRows()).toEqual(windows);
    expect(await auditRows()).toBe(audits);
  });

  it("rate_limit_hit refuses bad hits with class-22 errors and counts nothing", async () => {
    const name = await policy([3, "1 minute"], [10, "1 hour"]);
    const before = await stateRows();
    const cases: [string | null, string | null, number | null, string, string, string?][] = [
      [
        "nope",
        "k",
        1,
        "22023",
        'unknown rate-limit policy "nope"',
        "Create it with steward.set_rate_limit(policy, max_requests, per).",
      ],
      [name, "", 1, "22023", "key must not be empty"],
      [name, null, 1, "22004", "key must not be null"],
      [null, "k", 1, "22004", "policy must not be null"],
      [name, "k", 0, "22023", "cost must be a positive integer, got 0"],
      [name, "k", -2, "22023", "cost must be a positive integer, got -2"],
      [
        name,
        "k",
        4,
        "22023",
        `cost 4 exceeds the limit of policy "${name}" (3 per 00:01:00): it could never be admitted`,
      ],
      [name, "k".repeat(1025), 1, "22023", "key is 1025 bytes long; at most 1024 are allowed"],
    ];
    for (const [policyName, key, cost, code, message, hint] of cases) {
      const error = await sqlError(
        limits.app.pool.query("select * from steward.rate_limit_hit($1, $2, $3)", [policyName, key, cost]),
      );
      expect(error).toMatchObject({ code, message, ...(hint ? { hint } : {}) });
    }
    expect(await stateRows()).toBe(before);
  });

  it("answers the good hits of a batch and reports the bad ones without failing the call", async () => {
    const name = await policy([2, "1 hour"]);
    const answers = await hits([name, "nope", name, name], ["judy", "judy", "", "judy"], [1, 1, 1, 1]);
    expect(answers.map((a) => [a.hit, a.allowed, a.remaining, a.error_code])).toEqual([
      [1, true, 1, null],
      [2, null, null, "22023"],
      [3, null, null, "22023"],
      [4, true, 0, null],
    ]);
    expect(answers[1]!.error_message).toBe('unknown rate-limit policy "nope"');
  });

  it("reports null keys and costs in a batch as bad hits of their own", async () => {
    const name = await policy([2, "1 hour"]);
    const { rows } = await limits.app.pool.query(
      "select hit, allowed, error_code, error_message from steward.rate_limit_hits($1, $2, $3)",
      [
        [name, name, name],
        ["null-a", null, "null-b"],
        [1, 1, null],
      ],
    );
    expect(rows).toEqual([
      { hit: 1, allowed: true, error_code: null, error_message: null },
      { hit: 2, allowed: null, error_code: "22004", error_message: "key must not be null" },
      { hit: 3, allowed: null, error_code: "22004", error_message: "cost must not be null" },
    ]);
  });

  it("refuses a batch whose arrays differ in length", async () => {
    const error = await sqlError(hits(["a", "b"], ["k"]));
    expect(error).toEqual({
      code: "22023",
      message: "policies, keys and costs must have the same length, got 2, 1 and null",
      hint: undefined,
    });
  });
});

describe("rate-limit administration", () => {
  it("set_rate_limit replaces a window's limit, audits the change, and ignores a repeat", async () => {
    const name = await policy([2, "1 hour"]);
    await burst(name, "kim", 2);
    expect((await hit(name, "kim")).allowed).toBe(false);
    const audits = async () =>
      (
        await context.db.pool.query(
          "select action, target, detail from steward.audit_log where target = $1 order by id",
          [name],
        )
      ).rows;
    expect(await audits()).toHaveLength(1);
    await context.db.pool.query("select steward.set_rate_limit($1, 5, '60 minutes')", [name]);
    await context.db.pool.query("select steward.set_rate_limit($1, 5, '1 hour')", [name]);
    // A new limit starts afresh: the full burst of 5.
    expect((await burst(name, "kim", 6)).map((a) => a.allowed)).toEqual([true, true, true, true, true, false]);
    expect(await audits()).toEqual([
      expect.objectContaining({ action: "set_rate_limit" }),
      {
        action: "set_rate_limit",
        target: name,
        detail: { max_requests: 5, per: "01:00:00", previous_max_requests: 2 },
      },
    ]);
  });

  it("drop_rate_limit removes one window or the whole policy", async () => {
    const name = await policy([2, "1 minute"], [5, "1 hour"]);
    expect(
      (await context.db.pool.query("select steward.drop_rate_limit($1, '1 minute')", [name])).rows[0].drop_rate_limit,
    ).toBe(1);
    expect((await burst(name, "leo", 6)).filter((a) => a.allowed)).toHaveLength(5);
    expect((await context.db.pool.query("select steward.drop_rate_limit($1)", [name])).rows[0].drop_rate_limit).toBe(1);
    expect((await sqlError(hit(name, "leo"))).message).toBe(`unknown rate-limit policy "${name}"`);
  });
});

describe("rate-limit privileges", () => {
  it("lets steward_client hit, and nothing else", async () => {
    const name = await policy([1, "1 minute"]);
    expect((await hit(name, "mia")).allowed).toBe(true);
    for (const statement of [
      "select * from steward.rate_limit_state",
      "select * from steward.rate_limit_windows",
      "select steward.set_rate_limit('x', 1, '1 minute')",
      "select steward.drop_rate_limit('x')",
      "select steward.cleanup_rate_limits(10)",
      "update steward.rate_limit_state set steps = 0",
    ]) {
      expect((await sqlError(limits.app.pool.query(statement))).code, statement).toBe("42501");
    }
  });

  it("refuses a clock set by a client session: only the owner's tests choose the time", async () => {
    const name = await policy([1, "1 hour"]);
    const [client] = await limits.app.connect(1);
    await client!.query("set steward.clock = '2001-01-01 00:00:00+00'");
    expect(await sqlError(hit(name, "time-traveller", 1, client!))).toMatchObject({
      code: "42501",
      message:
        "steward.clock is set in this session, but only sessions of the owner of schema steward may set the time",
    });
    await client!.query("reset steward.clock");
    expect(await hit(name, "time-traveller", 1, client!)).toMatchObject({ allowed: true, remaining: 0 });
  });

  it("pins search_path on every rate-limit, lease and circuit function", async () => {
    const { rows } = await context.db.pool.query(`
      select p.proname, p.prosecdef, p.proconfig
        from pg_proc p
       where p.pronamespace = 'steward'::regnamespace
         and (p.proname like '%rate_limit%' or p.proname like '%lease%' or p.proname like 'circuit%')`);
    expect(rows.length).toBeGreaterThan(10);
    for (const row of rows) expect(row.proconfig, row.proname).toContain("search_path=pg_catalog, pg_temp");
  });
});

describe("rate-limit cleanup", () => {
  it("removes rows whose arrival time has passed, in bounded batches, and keeps live ones", async () => {
    const shortPolicy = await policy([1, "1 second"]);
    const longPolicy = await policy([1, "1 hour"]);
    const clock = await testClock(context.db.pool);
    await hits(Array(5).fill(shortPolicy), ["a", "b", "c", "d", "e"], undefined, clock.client);
    await hit(longPolicy, "kept", 1, clock.client);
    await clock.advance(1000);
    const live = async () =>
      (
        await context.db.pool.query(
          "select key from steward.rate_limit_state s join steward.rate_limit_windows w on w.id = s.window_id where w.policy = any($1)",
          [[shortPolicy, longPolicy]],
        )
      ).rows.map((r) => r.key);
    const removed: number[] = [];
    try {
      for (;;) {
        const count = Number((await clock.client.query("select steward.cleanup_rate_limits(2) as n")).rows[0].n);
        removed.push(count);
        if (count < 2) break;
      }
    } finally {
      await clock.release();
    }
    expect(removed.slice(0, 2)).toEqual([2, 2]);
    expect(await live()).toEqual(["kept"]);
    const { rows } = await context.db.pool.query(
      "select function::text from steward.cleanup_steps where name = 'rate_limits'",
    );
    expect(rows).toEqual([{ function: "steward.cleanup_rate_limits(integer)" }]);
  });

  it("refuses a batch size below 1 in every cleanup step of rate limits, leases and circuits", async () => {
    for (const step of ["cleanup_rate_limits", "cleanup_leases", "cleanup_circuits"]) {
      expect(await sqlError(context.db.pool.query(`select steward.${step}(0)`))).toMatchObject({
        code: "22023",
        message: "batch_size must be a positive integer, got 0",
      });
    }
  });
});
