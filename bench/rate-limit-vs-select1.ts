// Rate-limit decisions per second through our client vs `select 1` through a plain pool of the
// same size, both for 32 concurrent callers: how close a decision comes to a bare round trip.
import type pg from "pg";
import { measureMs, measureOurs, openPool, setupOurs, type OursState } from "./rate-limits.ts";
import { CALLERS } from "./rate-limits.ts";
import { defineScenario, throughput } from "./scenario.ts";

interface State {
  ours: OursState;
  plain: pg.Pool;
}

export const rateLimitVsSelect1 = defineScenario<State>({
  name: "rate_limit_vs_select1",
  unit: "calls/s",
  higherIsBetter: true,
  description: `rate_limit_hit decisions/s through our client (10,000 keys, hits coalesced per tick) vs select 1 through a plain pool, ${CALLERS} callers, 32 connections each`,
  async setup(context) {
    return { ours: await setupOurs(context), plain: await openPool(context.url, "steward bench: select 1") };
  },
  ours: (state, context) => measureOurs(state.ours, measureMs(context)),
  async baseline(state, context) {
    const result = await throughput(CALLERS, measureMs(context), () => state.plain.query("select 1"));
    return { value: result.perSecond, detail: { calls: result.count, errors: result.errors } };
  },
  async teardown(state) {
    await Promise.all([state.ours.pool.end(), state.plain.end()]);
  },
});
