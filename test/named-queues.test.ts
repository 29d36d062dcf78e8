// Named queues under the worker's default configuration (local queue on, batched completion):
// one job of a queue at a time, in the order they were added, while other jobs run beside them.
// graphile-worker 0.17's local queue broke this (upstream issue #621, fixed in 0.18.0).
import { afterEach, describe, expect, it } from "vitest";
import { defineTask } from "../src/worker/task.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { eventually, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

interface Run {
  queue: string | null;
  sequence: number;
  startedAt: number;
  endedAt: number;
}
const runs: Run[] = [];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// The queue travels in the payload: a fetched job carries only its queue's id.
const recorded = defineTask<Pick<Run, "queue" | "sequence"> & { ms: number }>({
  identifier: "test_recorded",
  description: "sleeps payload.ms and records when it ran, under its queue and sequence number",
  parse: (payload) => payload as Pick<Run, "queue" | "sequence"> & { ms: number },
  async run({ queue, sequence, ms }) {
    const startedAt = performance.now();
    await sleep(ms);
    runs.push({ queue, sequence, startedAt, endedAt: performance.now() });
  },
});

/** The runs of one queue in the order they started; each must begin after the one before ended. */
function overlapsAndOrder(queue: string) {
  const ofQueue = runs.filter((run) => run.queue === queue).sort((a, b) => a.startedAt - b.startedAt);
  const overlaps = ofQueue.slice(1).filter((run, i) => run.startedAt < ofQueue[i]!.endedAt).length;
  return { sequences: ofQueue.map((run) => run.sequence), overlaps };
}

describe("named queues", () => {
  it("runs the 50 jobs of a named queue one at a time and in order, with concurrency 8 and 100 other jobs beside them", async () => {
    const { pool } = context.db;
    // Added one statement at a time, interleaved: each queue's jobs get ascending ids and run_at,
    // and every batch the worker fetches holds jobs of both queues and unqueued ones.
    for (let sequence = 1; sequence <= 50; sequence++) {
      for (const queue of ["ordered", "ordered_too", null, null]) {
        const ms = queue ? 2 + (sequence % 5) * 3 : 10;
        await pool.query("select graphile_worker.add_job('test_recorded', $1::json, queue_name => $2)", [
          JSON.stringify({ queue, sequence, ms }),
          queue,
        ]);
      }
    }
    worker = await startTestWorker(context.db, { tasks: [recorded], config: { concurrency: 8 } });
    await eventually(
      async () => runs.length === 200 && (await pool.query("select from graphile_worker.jobs")).rowCount === 0,
      {
        timeoutMs: 30_000,
        what: "all 200 jobs to run",
      },
    );

    const expected = Array.from({ length: 50 }, (_, i) => i + 1);
    expect(overlapsAndOrder("ordered")).toEqual({ sequences: expected, overlaps: 0 });
    expect(overlapsAndOrder("ordered_too")).toEqual({ sequences: expected, overlaps: 0 });
    // The unqueued jobs did run side by side: the worker was not serial overall.
    const free = runs.filter((run) => run.queue === null);
    const concurrent = free.some((run) =>
      free.some((other) => other !== run && other.startedAt < run.endedAt && run.startedAt < other.endedAt),
    );
    expect(concurrent).toBe(true);
  });

  it(
    "starts a named queue's next job as soon as the one before completes, not at the next poll",
    { timeout: 90_000 },
    async () => {
      const { pool } = context.db;
      runs.length = 0;
      // Queued before the start, so no new-job announcement can wake the worker: each fetch finds
      // one job of the queue, and only that job's completion can announce the next.
      for (let sequence = 1; sequence <= 20; sequence++) {
        await pool.query("select graphile_worker.add_job('test_recorded', $1::json, queue_name => 'chain')", [
          JSON.stringify({ queue: "chain", sequence, ms: 1 }),
        ]);
      }
      worker = await startTestWorker(context.db, { tasks: [recorded] });
      await eventually(async () => runs.length === 20, { timeoutMs: 60_000, what: "the 20 jobs of the queue to run" });
      const { sequences, overlaps } = overlapsAndOrder("chain");
      expect({ sequences, overlaps }).toEqual({ sequences: Array.from({ length: 20 }, (_, i) => i + 1), overlaps: 0 });
      // Waiting for graphile-worker's 2-second poll between jobs would take about 40 s.
      const ofQueue = runs.filter((run) => run.queue === "chain").sort((a, b) => a.startedAt - b.startedAt);
      const waited = ofQueue.slice(1).reduce((sum, run, i) => sum + (run.startedAt - ofQueue[i]!.endedAt), 0);
      console.log(`20 jobs of one named queue: ${Math.round(waited)} ms between them in all`);
      expect(waited).toBeLessThan(10_000);
    },
  );
});
