// Hourly: every registered cleanup step (steward.cleanup_steps) deletes its expired rows in
// bounded batches, each its own short transaction.
import { runCleanup } from "../src/worker/cleanup.ts";
import { payloadObject } from "../src/worker/payload.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "cleanup";

export const cleanupTask = defineTask<Record<string, never>>({
  identifier: TASK,
  description: "delete rows past their retention, step by step, in bounded batches",
  schedule: { pattern: "7 * * * *", description: "hourly, at minute 7" },
  parse(payload) {
    payloadObject(TASK, payload, []);
    return {};
  },
  async run(_payload, { pool, signal, logger }) {
    const results = await runCleanup(pool, { signal, logger });
    return {
      deleted: Object.fromEntries(results.map((r) => [r.step, r.deleted])),
      incomplete: results.filter((r) => !r.complete).map((r) => r.step),
    };
  },
});
