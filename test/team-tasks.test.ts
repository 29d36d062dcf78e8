// A team's own tasks (modules in STEWARD_TASKS_DIR) and schedules (a crontab): loaded without a
// list to edit, treated like the built-ins, refused clearly when they cannot be used.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TASKS } from "../tasks/index.ts";
import { ConfigError } from "../src/errors.ts";
import { checkCrontabTasks, nextRun, parseCrontabText } from "../src/worker/crontab.ts";
import { planSchedules, schedulesOf } from "../src/worker/schedules.ts";
import { loadTaskFiles, taskDirectories } from "../src/worker/task-files.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { eventually, runCli, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
const WORKER_SRC = path.resolve("src/worker/index.ts");
let root: string;
let worker: RunningWorker | undefined;

afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

/** A directory of task modules written for one test. */
async function taskDir(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(root, name);
  await fs.mkdir(dir, { recursive: true });
  for (const [file, text] of Object.entries(files)) await fs.writeFile(path.join(dir, file), text);
  return dir;
}

const TEAM_TASKS = {
  // A plain graphile-worker task function, in JavaScript.
  "send_digest.mjs": `export default async function (payload, helpers) {
    await helpers.query("insert into public.digests (audience) values ($1)", [payload.audience]);
  }`,
  // defineTask with payload checking, in TypeScript.
  "charge_card.ts": `import { defineTask, PermanentError } from ${JSON.stringify(WORKER_SRC)};
  export default defineTask<{ cents: number }>({
    parse(payload: unknown) {
      const cents = (payload as { cents?: unknown }).cents;
      if (typeof cents !== "number") throw new PermanentError("charge_card: cents must be a number");
      return { cents };
    },
    async run({ cents }, { query }) {
      await query("insert into public.digests (audience) values ($1)", ["charged " + cents]);
      return { cents };
    },
  });`,
  // Helpers live in subdirectories, which are not task modules.
  "lib/format.mjs": `export const nothing = 1;`,
};

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "steward-team-"));
  await fs.mkdir(path.join(root, "team", "lib"), { recursive: true });
  await context.db.pool.query("create table public.digests (id serial primary key, audience text)");
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

const builtins = new Set(TASKS.map((task) => task.identifier));

describe("task modules", () => {
  it("loads every module of the directory, named by its file, skipping subdirectories", async () => {
    const dir = await taskDir("team", TEAM_TASKS);
    const tasks = await loadTaskFiles([dir], { reserved: builtins });
    expect(tasks.map((task) => task.identifier)).toEqual(["charge_card", "send_digest"]);
  });

  it("refuses a module that shadows a built-in task", async () => {
    const dir = await taskDir("shadow", { "cleanup.mjs": "export default async () => {};" });
    await expect(loadTaskFiles([dir], { reserved: builtins })).rejects.toThrow(
      /cleanup\.mjs: "cleanup" is a built-in task of pg-steward and cannot be replaced/,
    );
  });

  it("names the file of a module that fails to load or exports no task", async () => {
    const broken = await taskDir("broken", { "explode.mjs": "throw new Error('no config');" });
    await expect(loadTaskFiles([broken], { reserved: builtins })).rejects.toThrow(
      `task file ${path.join(broken, "explode.mjs")}: could not be loaded: no config`,
    );
    const empty = await taskDir("empty", { "nothing.mjs": "export const x = 1;" });
    await expect(loadTaskFiles([empty], { reserved: builtins })).rejects.toThrow(/nothing\.mjs: exports no task/);
  });

  it("refuses one identifier defined twice", async () => {
    const a = await taskDir("a", { "twice.mjs": "export default async () => {};" });
    const b = await taskDir("b", { "twice.mjs": "export default async () => {};" });
    await expect(loadTaskFiles([a, b], { reserved: builtins })).rejects.toThrow(/already defined by .*a\/twice\.mjs/);
  });

  it("uses ./tasks by default, unless it is pg-steward's own", async () => {
    expect(taskDirectories({ tasksDirs: undefined }, root)).toEqual([]);
    await fs.mkdir(path.join(root, "tasks"), { recursive: true });
    expect(taskDirectories({ tasksDirs: undefined }, root)).toEqual([path.join(root, "tasks")]);
    expect(taskDirectories({ tasksDirs: undefined }, process.cwd())).toEqual([]);
    expect(taskDirectories({ tasksDirs: ["/x", "/y"] }, root)).toEqual(["/x", "/y"]);
  });

  it("runs team tasks like the built-ins: done, dead letter at once on a permanent error, statistics", async () => {
    const dir = await taskDir("team", TEAM_TASKS);
    const tasks = await loadTaskFiles([dir], { reserved: builtins });
    worker = await startTestWorker(context.db, { tasks, health: true, statsFlushMs: 50 });
    const { pool } = context.db;
    await pool.query(`select graphile_worker.add_job('send_digest', '{"audience": "weekly"}')`);
    await pool.query(`select graphile_worker.add_job('charge_card', '{"cents": 250}')`);
    const bad = await pool.query(`select (graphile_worker.add_job('charge_card', '{"cents": "lots"}')).id`);
    await eventually(async () => (await pool.query("select 1 from public.digests")).rowCount === 2, {
      what: "both team tasks to run",
    });
    const dead = await eventually(
      async () =>
        (await pool.query("select * from steward.dead_letters where original_id = $1", [bad.rows[0].id])).rows[0],
      { what: "the bad payload's dead letter" },
    );
    expect(dead).toMatchObject({
      task_identifier: "charge_card",
      attempts: 1,
      last_error: expect.stringMatching(/cents must be a number/),
    });
    const expected = [
      { task: "charge_card", completed: 1, failed: 1 },
      { task: "send_digest", completed: 1, failed: 0 },
    ];
    const stats = async () =>
      (
        await pool.query(
          "select task, sum(completed)::int as completed, sum(failed)::int as failed from steward.job_stats where task in ('send_digest', 'charge_card') group by task order by task",
        )
      ).rows;
    await eventually(async () => JSON.stringify(await stats()) === JSON.stringify(expected), {
      what: "the statistics of both tasks",
    }).catch(() => undefined);
    expect(await stats()).toEqual(expected);
    const metrics = await (await fetch(`http://127.0.0.1:${worker.healthPort}/metrics`)).text();
    expect(metrics).toContain('steward_jobs_total{task="send_digest",outcome="completed"} 1');
    expect(metrics).toContain('steward_jobs_total{task="charge_card",outcome="failed"} 1');
  });
});

describe("the crontab", () => {
  const text = [
    "# comment",
    "",
    '0 * * * * recalculate ?id=confidence_hourly&fill=1h {name: "metric_confidence"}',
    "*/15 * * * * cleanup",
    "30 4 * * 0 vacuum_tables ?id=weekly_vacuum&max=2&queue=maintenance&priority=5&jobKey=wv {tables: ['public.t']}",
  ].join("\n");

  it("accepts the crontabs pg-steward ships: every line parses and its payload passes its task's check", async () => {
    for (const file of ["deploy/crontab.example", "examples/health-metrics/crontab"]) {
      const entries = parseCrontabText(await fs.readFile(file, "utf8"), file);
      expect(entries.map((entry) => entry.item.task)).toEqual(["recalculate", "vacuum_tables"]);
      expect(() => checkCrontabTasks(entries, TASKS, file)).not.toThrow();
    }
  });

  it("parses graphile-worker's syntax with payloads and options", () => {
    const entries = parseCrontabText(text, "crontab");
    expect(entries.map((e) => [e.line, e.item.identifier, e.item.task, e.pattern])).toEqual([
      [3, "confidence_hourly", "recalculate", "0 * * * *"],
      [4, "cleanup", "cleanup", "*/15 * * * *"],
      [5, "weekly_vacuum", "vacuum_tables", "30 4 * * 0"],
    ]);
    expect(entries[0]!.item.payload).toEqual({ name: "metric_confidence" });
    expect(entries[0]!.item.options.backfillPeriod).toBe(3_600_000);
    expect(entries[2]!.item.options).toMatchObject({
      maxAttempts: 2,
      queueName: "maintenance",
      priority: 5,
      jobKey: "wv",
    });
    expect(nextRun(entries[2]!.item, new Date("2026-11-30T12:00:00Z"))?.toISOString()).toBe("2026-12-06T04:30:00.000Z");
  });

  it("replaces a built-in default with a line named after it, and refuses STEWARD_CRON_ for it as well", () => {
    const entries = parseCrontabText(text, "crontab");
    const planned = planSchedules(schedulesOf(TASKS), entries, "crontab", {});
    const cleanup = planned.filter((s) => s.task === "cleanup");
    expect(cleanup.map((s) => [s.identifier, s.pattern, s.source])).toEqual([["cleanup", "*/15 * * * *", "crontab:4"]]);
    expect(planned.filter((s) => s.task === "vacuum_tables").map((s) => s.identifier)).toEqual([
      "steward:vacuum_tables",
      "weekly_vacuum",
    ]);
    expect(() => planSchedules(schedulesOf(TASKS), entries, "crontab", { STEWARD_CRON_CLEANUP: "0 * * * *" })).toThrow(
      "STEWARD_CRON_CLEANUP and line 4 of crontab both schedule cleanup; keep one of the two",
    );
  });

  it("names the line of a bad entry, an unknown task, or a payload the task refuses", () => {
    expect(() => parseCrontabText("# ok\n0 * * * * cleanup\n61 * * * * cleanup ?id=x", "/etc/crontab")).toThrow(
      /\/etc\/crontab: .*line 3/,
    );
    expect(() => parseCrontabText("0 * * * * cleanup\n5 * * * * cleanup", "crontab")).toThrow(
      'crontab: line 2 schedules "cleanup" again (line 1 did first); give one of them ?id=<another name>',
    );
    expect(() => parseCrontabText("0 * * * * cleanup ?max=lots", "crontab")).toThrow(/line 1/);
    const unknown = parseCrontabText("\n0 * * * * send_digest", "crontab");
    expect(() => checkCrontabTasks(unknown, TASKS, "crontab")).toThrow(
      /crontab: line 2 schedules task "send_digest", which this worker does not run/,
    );
    const badPayload = parseCrontabText('0 * * * * vacuum_tables ?id=v {tables: "all"}', "crontab");
    expect(() => checkCrontabTasks(badPayload, TASKS, "crontab")).toThrow(ConfigError);
    expect(() => checkCrontabTasks(badPayload, TASKS, "crontab")).toThrow(/crontab: line 1: vacuum_tables:/);
  });

  it("ships an example every line of which a worker accepts", async () => {
    const file = path.resolve("deploy/crontab.example");
    const entries = parseCrontabText(await fs.readFile(file, "utf8"), file);
    expect(entries.map((e) => e.item.task)).toEqual(["recalculate", "vacuum_tables"]);
    checkCrontabTasks(entries, TASKS, file);
  });
});

describe("the command line", () => {
  it("stops `steward worker` with exit 2 naming a task module that fails to load", async () => {
    const dir = await taskDir("cli-broken", { "explode.mjs": "throw new Error('missing API key');" });
    const result = await runCli(["worker"], { DATABASE_URL: context.db.url, STEWARD_TASKS_DIR: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`task file ${path.join(dir, "explode.mjs")}: could not be loaded: missing API key`);
  });

  it("stops `steward worker` with exit 2 naming the crontab line it cannot use", async () => {
    const file = path.join(root, "crontab-bad");
    await fs.writeFile(file, "# schedules\n0 * * * * cleanup\n0 * * * * nobody_runs_this\n");
    const result = await runCli(["worker"], { DATABASE_URL: context.db.url, STEWARD_CRONTAB: file });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${file}: line 3 schedules task "nobody_runs_this"`);
  });

  it("lets `steward run` enqueue a team task, checking its payload, and refuses an unknown one without --any-task", async () => {
    // A defineTask-shaped object (what defineTask returns), so the module imports nothing.
    const dir = await taskDir("cli-team", {
      "charge_card.mjs": `export const task = {
        parse(payload) {
          // A PermanentError as another copy of pg-steward would make it.
          if (typeof payload.cents !== "number")
            throw Object.assign(new Error("charge_card: cents must be a number"), { name: "PermanentError", code: "PERMANENT" });
          return payload;
        },
        async run() {},
      };`,
    });
    const env = { DATABASE_URL: context.db.url, STEWARD_TASKS_DIR: dir };
    const ok = await runCli(["run", "charge_card", '{"cents": 5}'], env);
    expect(ok.stderr).toBe("");
    expect(ok.stdout).toMatch(/enqueued charge_card as job \d+/);
    const refused = await runCli(["run", "charge_card", '{"cents": "x"}'], env);
    expect([refused.code, refused.stderr]).toEqual([2, expect.stringContaining("cents must be a number")]);
    const unknown = await runCli(["run", "elsewhere_task"], env);
    expect([unknown.code, unknown.stderr]).toEqual([2, expect.stringContaining('unknown task "elsewhere_task"')]);
    const forced = await runCli(["run", "elsewhere_task", "--any-task"], env);
    expect([forced.code, forced.stdout]).toEqual([0, expect.stringMatching(/enqueued elsewhere_task as job \d+/)]);
    await context.db.pool.query("delete from graphile_worker._private_jobs");
  });
});
