// What the two rate-limit scenarios share: 32 callers, 10,000 keys, one policy, and our
// TypeScript client (coalescing hits per tick) on a pool of 32 connections.
import type pg from "pg";
import { createPool } from "../src/database.ts";
import { RateLimiter } from "../src/client/rate-limits.ts";
import { throughput, type BenchContext, type Measurement } from "./scenario.ts";

export const CALLERS = 32;
const POOL_SIZE = 32;
const KEYS = 10_000;
/** 100 per second per key: with 10,000 keys nearly every hit is admitted, as in normal traffic. */
export const POLICY = { name: "bench", maxRequests: 100, perSeconds: 1 };

export const randomKey = () => `user:${Math.floor(Math.random() * KEYS)}`;
export const measureMs = (context: BenchContext) => (context.quick ? 500 : 3000);

export interface OursState {
  pool: pg.Pool;
  limiter: RateLimiter;
}

/** Our policy, a pool whose connections are all open, and the client on it. */
export async function setupOurs(context: BenchContext): Promise<OursState> {
  await context.pool.query("select steward.set_rate_limit($1, $2, make_interval(secs => $3))", [
    POLICY.name,
    POLICY.maxRequests,
    POLICY.perSeconds,
  ]);
  const pool = await openPool(context.url, "steward bench: ours");
  const limiter = new RateLimiter(pool);
  await measureOurs({ pool, limiter }, context.quick ? 200 : 500);
  return { pool, limiter };
}

/** Rate-limit decisions per second delivered to CALLERS concurrent callers. */
export async function measureOurs(state: OursState, durationMs: number): Promise<Measurement> {
  let denied = 0;
  const result = await throughput(CALLERS, durationMs, async () => {
    const decision = await state.limiter.hit(POLICY.name, randomKey());
    if (!decision.allowed) denied++;
  });
  return { value: result.perSecond, detail: { decisions: result.count, denied, errors: result.errors } };
}

/** A pool of POOL_SIZE connections, all opened before anything is measured. */
export async function openPool(url: string, applicationName: string): Promise<pg.Pool> {
  const pool = createPool(url, { max: POOL_SIZE, applicationName });
  const clients = await Promise.all(Array.from({ length: POOL_SIZE }, () => pool.connect()));
  for (const client of clients) client.release();
  return pool;
}
