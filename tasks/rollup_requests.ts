// Rolls raw request timings up into steward.request_stats_5m and request_stats_hourly: only the
// buckets that got rows since the last run, in steps of max_buckets until none are left.
import { optionalInteger, payloadObject } from "../src/worker/payload.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "rollup_requests";
/** Steps per job: bounds one job even if rows arrive faster than it rolls them up. */
const MAX_STEPS = 1000;

export const rollupRequests = defineTask<{ maxBuckets: number }>({
  identifier: TASK,
  description: "recompute the 5-minute and hourly request stats of buckets that got new rows",
  schedule: { pattern: "* * * * *", description: "every minute" },
  parse(payload) {
    const fields = payloadObject(TASK, payload, ["max_buckets"]);
    return { maxBuckets: optionalInteger(TASK, fields, "max_buckets", { min: 1, max: 1_000_000 }) ?? 5000 };
  },
  async run({ maxBuckets }, { query, signal }) {
    let buckets5m = 0;
    let bucketsHourly = 0;
    let steps = 0;
    let more = true;
    while (more && steps < MAX_STEPS && !signal?.aborted) {
      const { rows } = await query<{ buckets_5m: number; buckets_hourly: number; more: boolean }>(
        "select * from steward.rollup_requests($1)",
        [maxBuckets],
      );
      buckets5m += rows[0]!.buckets_5m;
      bucketsHourly += rows[0]!.buckets_hourly;
      more = rows[0]!.more;
      steps++;
    }
    return { buckets5m, bucketsHourly, steps, more };
  },
});
