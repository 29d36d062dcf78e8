// The cost of exact windows: rate-limit decisions per second through our client on a policy of
// one exact window vs one GCRA window of the same limit, same callers, keys and pool. An exact
// window keeps the time of each admitted hit per key (here up to 100) and is decided in the
// general path of rate_limit_hits; GCRA keeps one timestamp and takes the one-statement path.
import { CALLERS, measureMs, measureOurs, setupOurs, type BenchPolicy, type OursState } from "./rate-limits.ts";
import { defineScenario } from "./scenario.ts";

/** 100 per minute: at this load each key sees about one hit a second, so an exact window holds up to ~60 times. */
const EXACT: BenchPolicy = { name: "bench_exact", maxRequests: 100, perSeconds: 60, exact: true };
const GCRA: BenchPolicy = { name: "bench_gcra", maxRequests: 100, perSeconds: 60 };

export const rateLimitExactVsGcra = defineScenario<OursState>({
  name: "rate_limit_exact_vs_gcra",
  unit: "decisions/s",
  higherIsBetter: true,
  description: `decisions/s through our client on an exact window (100 per minute) vs a GCRA window of the same limit, ${CALLERS} callers, 10,000 keys, 32 connections`,
  setup: (context) => setupOurs(context, [EXACT, GCRA]),
  ours: (state, context) => measureOurs(state, measureMs(context), EXACT),
  baseline: (state, context) => measureOurs(state, measureMs(context), GCRA),
  async teardown(state) {
    await state.pool.end();
  },
});
