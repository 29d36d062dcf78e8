import { drainUntilEmpty, sinksFromConfig } from "../src/worker/invalidations.ts";
import { optionalInteger, payloadObject } from "../src/worker/payload.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "drain_invalidations";

export const drainInvalidations = defineTask({
  identifier: TASK,
  description: "delivers due invalidation tags to the sinks until none is due or the time budget ends",
  // The worker also drains continuously (woken by NOTIFY); this pass is the safety net.
  schedule: { pattern: "* * * * *", description: "every minute" },
  parse(payload) {
    const body = payloadObject(TASK, payload, ["max_ms"]);
    return { maxMs: optionalInteger(TASK, body, "max_ms", { min: 100, max: 600_000 }) ?? 30_000 };
  },
  async run({ maxMs }, { pool, config, logger }) {
    return drainUntilEmpty(
      {
        pool,
        sinks: sinksFromConfig(config, pool, logger),
        logger,
        batchSize: config.drainBatchSize,
        visibilityMs: config.drainVisibilityMs,
      },
      maxMs,
    );
  },
});
