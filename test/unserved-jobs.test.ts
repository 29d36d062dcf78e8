// Jobs for a task no live worker runs wait forever (graphile-worker fetches only identifiers it
// knows): workers record their identifiers on each heartbeat, and status, /metrics and verify
// report such jobs.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defineTask } from "../src/worker/task.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { eventually, runCli, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let worker: RunningWorker;

const served = defineTask({
  identifier: "served_task",
  description: "does nothing",
  parse: (payload) => payload,
  async run() {},
});

beforeAll(async () => {
  await context.db.pool.query("delete from steward.workers");
  worker = await startTestWorker(context.db, { tasks: [served], health: true });
  await context.db.pool.query(`
    select graphile_worker.add_job('nobody_runs_this', '{}') from generate_series(1, 3);
    select graphile_worker.add_job('nobody_runs_this_later', '{}', run_at => now() + interval '1 day');`);
});
afterAll(async () => {
  await worker.stop();
});

describe("unserved jobs", () => {
  it("records the identifiers a worker runs in its heartbeat row", async () => {
    const { rows } = await context.db.pool.query("select tasks from steward.worker_status where is_alive");
    expect(rows).toEqual([{ tasks: ["served_task"] }]);
  });

  it("lists due jobs whose task no live worker runs, and only those", async () => {
    await context.db.pool.query("select graphile_worker.add_job('served_task', '{}')");
    const { rows } = await context.db.pool.query("select task_identifier, jobs::int from steward.unserved_jobs()");
    expect(rows).toEqual([{ task_identifier: "nobody_runs_this", jobs: 3 }]);
  });

  it("reports them on /metrics, in verify and in status", async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${worker.healthPort}/metrics`)).text();
    expect(metrics).toMatch(/^steward_jobs_unserved\{task="nobody_runs_this"\} 3$/m);
    expect(metrics).not.toMatch(/steward_jobs_unserved\{task="served_task"\}/);

    const { rows } = await context.db.pool.query(
      "select status, detail from steward.verify_installation() where name = 'unserved jobs'",
    );
    expect(rows[0]).toMatchObject({ status: "warn", detail: expect.stringContaining("nobody_runs_this (3)") });

    const status = await runCli(["status"], { DATABASE_URL: context.db.url });
    expect(status.stdout).toMatch(/Jobs no live worker runs.*\n {2}nobody_runs_this: 3 due/);
    expect(status.stdout).toMatch(/Schedules[^\n]*\n.*identifier.*next run/);
    expect(status.stdout).toMatch(/steward:cleanup\s+7 \* \* \* \*\s+cleanup\s+in /);
  });

  it("counts every due job as unserved when no worker is alive", async () => {
    await worker.stop();
    await eventually(async () => (await context.db.pool.query("select 1 from steward.workers")).rowCount === 0);
    await context.db.pool.query("select graphile_worker.add_job('served_task', '{}')");
    const { rows } = await context.db.pool.query(
      "select task_identifier, jobs::int from steward.unserved_jobs() order by 1",
    );
    expect(rows.map((row) => row.task_identifier)).toEqual(["nobody_runs_this", "served_task"]);
  });
});
