// What the two rate-limit scenarios share: 32 callers, 10,000 keys, one policy, and our
// TypeScript client (coalescing hits per tick) on a pool of 32 connections.
import type pg from "pg";
import { createPool } from "../src/database.ts";
import { RateLimiter } from "../src/client/rate-limits.ts";
import { throughput, type BenchContext, type Measurement } from "./scenario.ts";

export const CALLERS = 32;
const POOL_SIZE = 32;
const KEYS = 10_000;
export interface BenchPolicy {
  name: string;
  maxRequests: number;
  perSeconds: number;
  exact?: boolean;
}

/** 100 per second per key: with 10,000 keys nearly every hit is admitted, as in normal traffic. */
export const POLICY: BenchPolicy = { name: "bench", maxRequests: 100, perSeconds: 1 };

export const randomKey = () => `user:${Math.floor(Math.random() * KEYS)}`;
export const measureMs = (context: BenchContext) => (context.quick ? 500 : 3000);

export interface OursState {
  pool: pg.Pool;
  limiter: RateLimiter;
}

/** Sets a policy of one window. */
async function setPolicy(context: BenchContext, policy: BenchPolicy): Promise<void> {
  await context.pool.query("select steward.set_rate_limit($1, $2, make_interval(secs => $3), $4)", [
    policy.name,
    policy.maxRequests,
    policy.perSeconds,
    policy.exact ?? false,
  ]);
}

/** The policies, a pool whose connections are all open, and the client on it, warmed up on each policy. */
export async function setupOurs(context: BenchContext, policies: BenchPolicy[] = [POLICY]): Promise<OursState> {
  for (const policy of policies) await setPolicy(context, policy);
  const pool = await openPool(context.url, "steward bench: ours");
  const limiter = new RateLimiter(pool);
  for (const policy of policies) await measureOurs({ pool, limiter }, context.quick ? 200 : 500, policy);
  return { pool, limiter };
}

/** Rate-limit decisions per second delivered to CALLERS concurrent callers. */
export async function measureOurs(
  state: OursState,
  durationMs: number,
  policy: BenchPolicy = POLICY,
): Promise<Measurement> {
  let denied = 0;
  const result = await throughput(CALLERS, durationMs, async () => {
    const decision = await state.limiter.hit(policy.name, randomKey());
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
