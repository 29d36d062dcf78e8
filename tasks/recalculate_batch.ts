import { payloadObject, requiredInteger } from "../src/worker/payload.ts";
import { computeBatch, readRun, RecalcBatchError, runSummary } from "../src/worker/recalculation.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "recalculate_batch";

export const recalculateBatch = defineTask({
  identifier: TASK,
  description:
    "one batch of a recalculation run (enqueued by recalculate): compute(keys) and the batch's completion in one transaction",
  parse(payload) {
    const body = payloadObject(TASK, payload, ["run", "batch"]);
    return {
      run: requiredInteger(TASK, body, "run", { min: 1, max: Number.MAX_SAFE_INTEGER }),
      batch: requiredInteger(TASK, body, "batch", { min: 0, max: 2 ** 31 - 1 }),
    };
  },
  async run({ run, batch }, { pool, job, logger }) {
    const result = await computeBatch(pool, run, batch, job.attempts >= job.max_attempts);
    if (result.runStatus) {
      // This batch ended the run: say how it went, once.
      const ended = await readRun(pool, run);
      if (ended) logger.info({ run, name: ended.name, status: ended.status, keys: ended.keysDone }, runSummary(ended));
    }
    if (result.outcome === "retry" || result.outcome === "failed") {
      throw new RecalcBatchError(`batch ${batch} of run ${run}: ${result.error}`);
    }
    return { run, batch, outcome: result.outcome, keys: result.keys };
  },
});
