// Rate-limit decisions per second through our client vs rate-limiter-flexible's
// RateLimiterPostgres (fixed window, one upsert per call) doing the same job: the same policy,
// keys, callers and pool size.
import type pg from "pg";
import { RateLimiterPostgres, RateLimiterRes } from "rate-limiter-flexible";
import {
  CALLERS,
  POLICY,
  measureMs,
  measureOurs,
  openPool,
  randomKey,
  setupOurs,
  type OursState,
} from "./rate-limits.ts";
import { defineScenario, throughput } from "./scenario.ts";

interface State {
  ours: OursState;
  flexiblePool: pg.Pool;
  flexible: RateLimiterPostgres;
}

export const rateLimitVsFlexible = defineScenario<State>({
  name: "rate_limit_vs_flexible",
  unit: "decisions/s",
  higherIsBetter: true,
  description: `rate_limit_hit decisions/s through our client vs rate-limiter-flexible's RateLimiterPostgres, ${CALLERS} callers, 10,000 keys, 32 connections each`,
  async setup(context) {
    const ours = await setupOurs(context);
    const flexiblePool = await openPool(context.url, "steward bench: rate-limiter-flexible");
    const flexible = await new Promise<RateLimiterPostgres>((resolve, reject) => {
      const limiter: RateLimiterPostgres = new RateLimiterPostgres(
        {
          storeClient: flexiblePool,
          storeType: "pool",
          tableName: "rate_limiter_flexible_bench",
          points: POLICY.maxRequests,
          duration: POLICY.perSeconds,
          clearExpiredByTimeout: false,
        },
        (error?: Error) => (error ? reject(error) : resolve(limiter)),
      );
    });
    return { ours, flexiblePool, flexible };
  },
  ours: (state, context) => measureOurs(state.ours, measureMs(context)),
  async baseline(state, context) {
    let denied = 0;
    const result = await throughput(CALLERS, measureMs(context), async () => {
      try {
        await state.flexible.consume(randomKey());
      } catch (error) {
        // A denial is a decision too; rate-limiter-flexible reports it by rejecting.
        if (!(error instanceof RateLimiterRes)) throw error;
        denied++;
      }
    });
    return { value: result.perSecond, detail: { decisions: result.count, denied, errors: result.errors } };
  },
  async teardown(state, context) {
    await Promise.all([state.ours.pool.end(), state.flexiblePool.end()]);
    await context.pool.query("drop table if exists rate_limiter_flexible_bench");
  },
});
