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
  worker = await startTestWorker(context.db, {
    tasks: [served],
    health: true,
    schedules: [{ task: "served_task", pattern: "5 4 * * *", description: "every day at 04:05", payload: { x: 1 } }],
  });
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
  });

  it("shows the schedules the live workers report, not those of the environment status runs in", async () => {
    const { rows } = await context.db.pool.query(
      "select identifier, task, pattern, payload, source, workers from steward.worker_schedules()",
    );
    expect(rows).toEqual([
      {
        identifier: "steward:served_task",
        task: "served_task",
        pattern: "5 4 * * *",
        payload: { x: 1 },
        source: "default",
        workers: 1,
      },
    ]);
    // The command's own environment schedules cleanup differently: the worker's schedule is shown.
    const status = await runCli(["status"], { DATABASE_URL: context.db.url, STEWARD_CRON_CLEANUP: "1 2 * * *" });
    expect(status.stdout).toMatch(/Schedules \(reported by 1 live worker\(s\)\)\n.*identifier.*next run/);
    expect(status.stdout).toMatch(/steward:served_task\s+5 4 \* \* \*\s+served_task \{"x":1\}\s+in .*default/);
    expect(status.stdout).not.toMatch(/steward:cleanup/);
    const json = JSON.parse((await runCli(["status", "--json"], { DATABASE_URL: context.db.url })).stdout);
    expect(json).toMatchObject({ schedules_from: "workers", schedules: [{ identifier: "steward:served_task" }] });

    // A worker of the previous version beats with four arguments (a rolling upgrade) and reports none.
    // And one that reports odd schedules (another version, a bug) spoils nothing for the others.
    await context.db.pool.query(`
      select steward.worker_heartbeat('older-pool', 'old-host', 1, array['served_task']);
      select steward.worker_heartbeat('odd-pool', 'odd-host', 2, array['served_task'], '[{}, 1, "x", {"identifier": "odd"}]');`);
    try {
      const mixed = await runCli(["status"], { DATABASE_URL: context.db.url });
      expect(mixed.code, mixed.stderr).toBe(0);
      expect(mixed.stdout).toMatch(/Schedules \(reported by 2 live worker\(s\); 1 of an older version report none\)/);
      expect(mixed.stdout).toMatch(/steward:served_task\s+5 4 \* \* \*/);
      expect(mixed.stdout).toMatch(/^ {2}odd\s+\?/m);
      expect((await runCli(["status", "--json"], { DATABASE_URL: context.db.url })).code).toBe(0);
    } finally {
      await context.db.pool.query("delete from steward.workers where pool_id in ('older-pool', 'odd-pool')");
    }
  });

  it("counts every due job as unserved when no worker is alive", async () => {
    await worker.stop();
    await eventually(async () => (await context.db.pool.query("select 1 from steward.workers")).rowCount === 0);
    await context.db.pool.query("select graphile_worker.add_job('served_task', '{}')");
    const { rows } = await context.db.pool.query(
      "select task_identifier, jobs::int from steward.unserved_jobs() order by 1",
    );
    expect(rows.map((row) => row.task_identifier)).toEqual(["nobody_runs_this", "served_task"]);

    // With no live worker, status falls back to what this environment would schedule.
    const status = await runCli(["status"], { DATABASE_URL: context.db.url });
    expect(status.stdout).toMatch(/Schedules \(of a worker started with this environment: no worker is alive\)/);
    expect(status.stdout).toMatch(/steward:cleanup\s+7 \* \* \* \*\s+cleanup\s+in /);
  });
});
