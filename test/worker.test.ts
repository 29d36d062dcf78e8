import { afterEach, describe, expect, it } from "vitest";
import pg from "pg";
import { defineTask } from "../src/worker/task.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { eventually, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

const started = new Set<string>();
const released = new Set<string>();
const echo = defineTask<{ ms: number }>({
  identifier: "test_sleep",
  description: "sleeps for payload.ms, ignoring the abort signal",
  parse: (payload) => ({ ms: Number((payload as { ms?: number }).ms ?? 0) }),
  async run({ ms }, { job }) {
    started.add(job.id);
    await new Promise((resolve) => setTimeout(resolve, ms));
    released.add(job.id);
  },
});

async function addJob(pool: pg.Pool, payload: object): Promise<string> {
  const { rows } = await pool.query("select id::text from graphile_worker.add_job('test_sleep', $1::json)", [
    JSON.stringify(payload),
  ]);
  return rows[0].id;
}

async function jobRow(pool: pg.Pool, id: string) {
  const { rows } = await pool.query("select * from graphile_worker.jobs where id = $1", [id]);
  return rows[0];
}

describe("the worker", () => {
  it("runs a job and counts it on /metrics", async () => {
    worker = await startTestWorker(context.db, { tasks: [echo], health: true });
    const id = await addJob(context.db.pool, { ms: 1 });
    await eventually(async () => !(await jobRow(context.db.pool, id)), { what: "the job to complete" });
    const metrics = await eventually(async () => {
      const text = await (await fetch(`http://127.0.0.1:${worker!.healthPort}/metrics`)).text();
      return text.includes('steward_jobs_total{task="test_sleep",outcome="completed"} 1') && text;
    });
    expect(metrics).toMatch(/steward_job_duration_seconds_count\{task="test_sleep"\} 1/);
  });

  it("reports queue depth by task and state", async () => {
    worker = await startTestWorker(context.db, { tasks: [echo], health: true });
    await context.db.pool.query(
      "select graphile_worker.add_job('test_later', '{}'::json, run_at => now() + interval '1 hour') from generate_series(1, 3)",
    );
    const text = await (await fetch(`http://127.0.0.1:${worker.healthPort}/metrics`)).text();
    expect(text).toContain('steward_queue_depth{state="scheduled",task="test_later"} 3');
  });

  it("lets a running job finish when stopped", async () => {
    worker = await startTestWorker(context.db, { tasks: [echo] });
    const id = await addJob(context.db.pool, { ms: 1500 });
    await eventually(async () => started.has(id), { what: "the job to start" });
    const began = Date.now();
    await worker.stop("test");
    expect(Date.now() - began).toBeGreaterThan(500);
    expect(released.has(id)).toBe(true);
    expect(await jobRow(context.db.pool, id)).toBeUndefined();
  });

  it("hands back the jobs it locked ahead when stopped, with their attempt returned, and runs none of them", async () => {
    const { pool } = context.db;
    // Queued before the start, so the worker's first fetch locks all six: one runs, five wait.
    const { rows } = await pool.query(
      `select array_agg(j.id::text) as ids
         from generate_series(1, 6) as n, graphile_worker.add_job('test_sleep', json_build_object('ms', 1500, 'n', n)) j`,
    );
    const ids: string[] = rows[0].ids;
    worker = await startTestWorker(context.db, { tasks: [echo], config: { concurrency: 1 } });
    const running = await eventually(async () => ids.find((id) => started.has(id)), { what: "one job to start" });
    const { rows: locked } = await pool.query(
      "select count(*)::int as n from graphile_worker.jobs where id = any($1) and locked_at is not null",
      [ids],
    );
    expect(locked[0].n).toBe(6);

    await worker.stop("test");
    expect(released.has(running)).toBe(true);
    const { rows: left } = await pool.query(
      "select j.id::text as id, j.attempts, j.locked_at, j.last_error from graphile_worker.jobs j where j.id = any($1) order by j.id",
      [ids],
    );
    expect(left).toEqual(
      ids
        .filter((id) => id !== running)
        .sort((a, b) => Number(a) - Number(b))
        .map((id) => ({ id, attempts: 0, locked_at: null, last_error: null })),
    );
    expect(ids.filter((id) => started.has(id))).toEqual([running]);
    await pool.query("delete from graphile_worker._private_jobs where id = any($1)", [ids]);
  });

  it("releases a job that outlives the shutdown timeout, for another worker to retry", async () => {
    worker = await startTestWorker(context.db, { tasks: [echo], config: { shutdownTimeoutMs: 500 } });
    const id = await addJob(context.db.pool, { ms: 20_000 });
    await eventually(async () => started.has(id), { what: "the job to start" });
    const began = Date.now();
    await worker.stop("test");
    expect(Date.now() - began).toBeLessThan(8000);
    const row = await jobRow(context.db.pool, id);
    expect(row).toMatchObject({ locked_at: null, attempts: 1 });
    expect(row.last_error).toMatch(/shutdown/i);
  });
});
