// The zx scripts people run by hand, run the same way against a test database.
import { spawn } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { TASKS } from "../tasks/index.ts";
import { type CliResult, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let worker: RunningWorker | undefined;

beforeAll(async () => {
  await context.db.pool.query(`
    create table public.scores (id integer primary key, score integer);
    insert into public.scores select i, 0 from generate_series(1, 1000) as i;
    create function public.rescore(keys jsonb) returns void language sql as $$
      update public.scores set score = score + 1 where id in (select k::integer from jsonb_array_elements_text(keys) as k)
    $$;
    select steward.register_recalculation('scores', 'select to_jsonb(id) as key from public.scores', 'public.rescore(jsonb)', 100);
  `);
  worker = await startTestWorker(context.db, { tasks: TASKS });
});
afterAll(async () => {
  await worker?.stop();
});

function zx(script: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        path.join(PACKAGE_ROOT, "node_modules", "zx", "build", "cli.js"),
        path.join(PACKAGE_ROOT, "scripts", script),
        ...args,
      ],
      {
        env: { ...process.env, DATABASE_URL: context.db.url, LOG_LEVEL: "warn" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

describe("scripts/", () => {
  it("post-deploy-check migrates, smoke-tests each task and prints a checklist", async () => {
    const result = await zx("post-deploy-check.mjs", ["--timeout", "90s"]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^✔ migrate: migrated: steward \d{6}\.sql/m);
    expect(result.stdout).toMatch(/^✔ verify/m);
    expect(result.stdout).toMatch(/^✔ run drain_invalidations: \d+ ms$/m);
    expect(result.stdout).toMatch(/^✔ run recalculate: \d+ ms$/m);
    expect(result.stdout).not.toContain("recalculate_batch");
    expect(result.stdout).toMatch(/, 0 failed$/m);
    // The recalculate smoke test is a run over no keys: nothing was recomputed.
    const { rows } = await context.db.pool.query(
      "select keys_total, status from steward.recalc_runs where name = 'scores'",
    );
    expect(rows).toEqual([{ keys_total: 0, status: "completed" }]);
  }, 180_000);

  it("recalculate follows a run to its end and exits by its outcome", async () => {
    const result = await zx("recalculate.mjs", ["scores"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/run \d+ of scores completed: 1,000 of 1,000 keys in 10 of 10 batches/);
    const { rows } = await context.db.pool.query("select count(*)::int as n from public.scores where score = 1");
    expect(rows[0].n).toBe(1000);
    expect((await zx("recalculate.mjs", [])).code).toBe(2);
  }, 120_000);

  it("replay-dead-letters refuses without a task, and replays a task's dead letters", async () => {
    expect((await zx("replay-dead-letters.mjs", [])).code).toBe(2);
    const result = await zx("replay-dead-letters.mjs", ["--task", "recalculate_batch", "--dry-run"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/would replay 0 of 0 dead letters of recalculate_batch/);
    await context.db.pool.query(`
      insert into steward.dead_letters (source, task_identifier, payload, attempts, max_attempts, last_error)
      values ('job', 'smoke_noop', '{"n": 1}', 3, 3, 'boom'), ('job', 'smoke_noop', '{"n": 2}', 3, 3, 'boom'),
             ('job', 'other_task', '{}', 3, 3, 'boom')`);
    const replayed = await zx("replay-dead-letters.mjs", ["--task", "smoke_noop"]);
    expect(replayed.code, replayed.stderr).toBe(0);
    expect(replayed.stdout).toMatch(/replayed 2 of \d+ dead letters of smoke_noop/);
    const { rows } = await context.db.pool.query(
      "select payload->>'n' as n from graphile_worker.jobs j join graphile_worker._private_jobs p using (id) where j.task_identifier = 'smoke_noop' order by 1",
    );
    expect(rows).toEqual([{ n: "1" }, { n: "2" }]);
  }, 60_000);
});
