import { permanentIfHopeless } from "../src/errors.ts";
import { optionalArray, payloadObject, requiredString } from "../src/worker/payload.ts";
import { startRecalculation } from "../src/worker/recalculation.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "recalculate";

export const recalculate = defineTask({
  identifier: TASK,
  description:
    'starts a run of a registered recalculation (every key, or "keys") as one recalculate_batch job per batch, or joins the run in progress',
  parse(payload) {
    const body = payloadObject(TASK, payload, ["name", "keys"]);
    return { name: requiredString(TASK, body, "name"), keys: optionalArray(TASK, body, "keys", 100_000) };
  },
  async run({ name, keys }, { pool }) {
    try {
      const { run, joined } = await startRecalculation(pool, name, keys);
      return { name, run: run.id, joined, status: run.status, keys: run.keysTotal, batches: run.batchesTotal };
    } catch (error) {
      // Unknown name, bad keys: no retry helps. A run in progress over other keys (P0001) is
      // retried with graphile-worker's backoff until that run has ended.
      throw permanentIfHopeless(TASK, error);
    }
  },
});
