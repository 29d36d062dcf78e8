// What the rate-limit test files share: a database, an application role holding steward_client,
// policies of their own, hits through rate_limit_hit and rate_limit_hits with numeric answers,
// and a connection whose clock the test moves.
import pg from "pg";
import { afterAll, beforeAll } from "vitest";
import { createClientRole, type ClientRole } from "./client-role.ts";
import { testClock, type TestClock } from "./clock.ts";
import { useTestDatabase } from "./helpers.ts";

export interface Answer {
  allowed: boolean;
  remaining: number;
  retry_after_ms: number;
  reset_ms: number;
}

export interface BatchAnswer extends Answer {
  hit: number;
  window_limits: number[] | null;
  window_remaining: number[] | null;
  window_reset_ms: number[] | null;
  error_code: string | null;
  error_message: string | null;
}

/** bigint columns (…_ms) arrive as strings: numbers read better in expectations. */
const numbers = <T extends Record<string, unknown>>(row: T): T =>
  Object.fromEntries(
    Object.entries(row).map(([name, value]) => [
      name,
      typeof value === "string" && /_ms$/.test(name)
        ? Number(value)
        : Array.isArray(value) && /_ms$/.test(name)
          ? value.map(Number)
          : value,
    ]),
  ) as T;

type Queryable = pg.Pool | pg.Client;

/** A test file's database and client role, and calls on them. Call once at the top of the file. */
export function useRateLimits() {
  const context = useTestDatabase();
  let app: ClientRole | undefined;
  beforeAll(async () => {
    app = await createClientRole(context.db);
  });
  afterAll(async () => {
    await app?.drop();
  });
  const role = () => {
    if (!app) throw new Error("the client role is created in beforeAll");
    return app;
  };

  let policyCount = 0;
  /** A policy of its own for one test: windows as [max_requests, per] or [max_requests, per, "exact"]. */
  async function policy(...windows: ([number, string] | [number, string, "exact"])[]): Promise<string> {
    const name = `p${++policyCount}`;
    for (const [max, per, kind] of windows) {
      await context.db.pool.query("select steward.set_rate_limit($1, $2, $3::interval, $4)", [
        name,
        max,
        per,
        kind === "exact",
      ]);
    }
    return name;
  }

  async function hit(policyName: string, key: string, cost = 1, client: Queryable = role().pool): Promise<Answer> {
    const { rows } = await client.query("select * from steward.rate_limit_hit($1, $2, $3)", [policyName, key, cost]);
    return numbers(rows[0]);
  }

  async function hits(
    policies: string[],
    keys: string[],
    costs?: number[],
    client: Queryable = role().pool,
  ): Promise<BatchAnswer[]> {
    const { rows } = await client.query("select * from steward.rate_limit_hits($1, $2, $3)", [
      policies,
      keys,
      costs ?? null,
    ]);
    return rows.map(numbers);
  }

  /** The same hit n times in one call: one instant, so the answers do not depend on timing. */
  const burst = (policyName: string, key: string, n: number, cost = 1, client: Queryable = role().pool) =>
    hits(Array(n).fill(policyName), Array(n).fill(key), Array(n).fill(cost), client);

  /** `callers` connections of the client role, each hitting `key` `rounds` times in turn: every answer. */
  async function hammer(policyName: string, key: string, callers: number, rounds: number): Promise<Answer[]> {
    const clients = await role().connect(callers);
    const answers = await Promise.all(
      clients.map(async (client) => {
        const mine: Answer[] = [];
        for (let i = 0; i < rounds; i++) mine.push(await hit(policyName, key, 1, client));
        return mine;
      }),
    );
    return answers.flat();
  }

  /** Runs `work` on a connection whose clock the test moves, acting as the client role. */
  async function withClock<T>(work: (clock: TestClock) => Promise<T>, start?: Date): Promise<T> {
    const clock = await testClock(context.db.pool, { role: role().name, start });
    try {
      return await work(clock);
    } finally {
      await clock.release();
    }
  }

  return {
    context,
    get app() {
      return role();
    },
    policy,
    hit,
    hits,
    burst,
    hammer,
    withClock,
  };
}
