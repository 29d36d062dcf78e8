import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { startWorker } from "../src/worker/runner.ts";
import { defineTask } from "../src/worker/task.ts";
import { eventually, startTestWorker, testConfig, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  // A test that failed half-way leaves heartbeat rows behind, which the next one would sweep.
  await context.db.pool.query("delete from steward.workers");
});

/** A worker process (test/fixtures/worker.ts) against the test database. */
function spawnWorker() {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(PACKAGE_ROOT, "test", "fixtures", "worker.ts")], {
    cwd: PACKAGE_ROOT,
    env: {
      ...process.env,
      DATABASE_URL: context.db.url,
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
      STEWARD_CONCURRENCY: "2",
    },
    stdio: ["ignore", "inherit", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (chunk) => {
    stderr += chunk;
    if (process.env.TEST_LOG_LEVEL) process.stderr.write(chunk);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, stderr })),
  );
  children.push(child);
  return { child, exited };
}

async function lockedJob(pool: string) {
  const { rows } = await context.db.pool.query(
    "select count(*)::int as n from graphile_worker.jobs where locked_by = $1",
    [pool],
  );
  return rows[0].n as number;
}

/** The heartbeat timeout the crash tests set, and how much longer than it recovery may take. */
const timeoutMs = 3000;
const marginMs = 25_000;

/** A short heartbeat timeout, and an empty public.test_runs for test_slow to record its runs. */
async function prepareCrash() {
  const { pool } = context.db;
  await pool.query("select steward.set_setting('workers.heartbeat_timeout', $1)", [`${timeoutMs} milliseconds`]);
  await pool.query("drop table if exists public.test_runs");
  await pool.query("create table public.test_runs (job_id bigint, attempt int, pid int, at timestamptz default now())");
}

describe("crash recovery", () => {
  it(
    "runs the job of a SIGKILLed worker on the other worker within the heartbeat timeout plus a margin",
    { timeout: 120_000 },
    async () => {
      const { pool } = context.db;
      await prepareCrash();
      const workers = [spawnWorker(), spawnWorker()];
      const pids = workers.map((w) => w.child.pid);
      await eventually(
        async () => {
          const { rows } = await pool.query("select count(*)::int as n from steward.workers where pid = any($1)", [
            pids,
          ]);
          return rows[0].n === 2;
        },
        { timeoutMs: 60_000, what: "both workers' heartbeats" },
      );

      const { rows: added } = await pool.query(
        `select id::text from graphile_worker.add_job('test_slow', '{"ms": 600000}', max_attempts => 5)`,
      );
      const id = added[0].id as string;
      const holder = await eventually(
        async () => {
          const { rows } = await pool.query(
            `select w.pool_id, w.pid from graphile_worker.jobs j join steward.workers w on w.pool_id = j.locked_by where j.id = $1`,
            [id],
          );
          return rows[0] as { pool_id: string; pid: number } | undefined;
        },
        { timeoutMs: 30_000, what: "a worker to take the job" },
      );
      const victim = workers.find((w) => w.child.pid === holder.pid)!;
      const survivor = workers.find((w) => w !== victim)!;

      victim.child.kill("SIGKILL");
      const killedAt = Date.now();
      expect((await victim.exited).signal).toBe("SIGKILL");

      const run = await eventually(
        async () => {
          const { rows } = await pool.query("select attempt, pid from public.test_runs where job_id = $1", [id]);
          return rows[0] as { attempt: number; pid: number } | undefined;
        },
        { timeoutMs: timeoutMs + marginMs, intervalMs: 100, what: "the survivor to finish the job" },
      );
      const recoveredMs = Date.now() - killedAt;
      console.log(`job finished by the survivor ${recoveredMs} ms after the kill (heartbeat timeout ${timeoutMs} ms)`);
      expect(run).toEqual({ attempt: 2, pid: survivor.child.pid });
      expect(recoveredMs).toBeLessThan(timeoutMs + marginMs);
      await eventually(
        async () => (await pool.query("select 1 from graphile_worker.jobs where id = $1", [id])).rowCount === 0,
      );

      const { rows: audit } = await pool.query(
        "select detail from steward.audit_log where action = 'release_dead_worker' and target = $1",
        [holder.pool_id],
      );
      expect(audit).toEqual([{ detail: expect.objectContaining({ pid: victim.child.pid, released_jobs: 1 }) }]);
      expect((await pool.query("select count(*)::int as n from steward.dead_letters")).rows[0].n).toBe(0);

      // A clean stop removes the survivor's row, leaving nothing to sweep.
      survivor.child.kill("SIGTERM");
      const exit = await survivor.exited;
      expect(exit.code, exit.stderr).toBe(0);
      expect((await pool.query("select pool_id from steward.workers")).rows).toEqual([]);
    },
  );

  it(
    "runs the jobs a SIGKILLed worker had locked ahead, and frees its named queue, within the heartbeat timeout plus a margin",
    { timeout: 120_000 },
    async () => {
      const { pool } = context.db;
      await prepareCrash();
      const victim = spawnWorker();
      const { pool_id: victimPool } = await eventually(
        async () =>
          (await pool.query("select pool_id from steward.workers where pid = $1", [victim.child.pid])).rows[0],
        { timeoutMs: 60_000, what: "the first worker's heartbeat" },
      );

      // One statement, so the worker's local queue locks them in one fetch: two run (concurrency
      // 2), the rest wait in its local queue. Of the named queue only the first job is locked.
      // Distinct run_at: a queue runs its jobs by (priority, run_at), and ties have no order.
      const { rows: added } = await pool.query(`
      select array_agg(j.id::text order by n) as ids
        from generate_series(1, 8) as n,
             graphile_worker.add_job('test_slow',
               json_build_object('ms', case when n = 8 then 0 else 600000 end),
               queue_name => case when n >= 7 then 'test_crash' end,
               run_at => now() - (8 - n) * interval '1 millisecond', max_attempts => 5) j`);
      const ids: string[] = added[0].ids;
      await eventually(async () => (await lockedJob(victimPool)) === 7, {
        timeoutMs: 30_000,
        what: "the worker to lock seven jobs",
      });
      const { rows: queueLock } = await pool.query(
        "select locked_by from graphile_worker._private_job_queues where queue_name = 'test_crash'",
      );
      expect(queueLock).toEqual([{ locked_by: victimPool }]);

      const survivor = spawnWorker();
      await eventually(
        async () =>
          (await pool.query("select 1 from steward.workers where pid = $1", [survivor.child.pid])).rowCount === 1,
        { timeoutMs: 60_000, what: "the second worker's heartbeat" },
      );
      victim.child.kill("SIGKILL");
      const killedAt = Date.now();
      expect((await victim.exited).signal).toBe("SIGKILL");

      const runs = await eventually(
        async () => {
          const { rows } = await pool.query(
            "select job_id::text, attempt, pid from public.test_runs order by at, job_id",
          );
          return rows.length === 8 && rows;
        },
        { timeoutMs: timeoutMs + marginMs, intervalMs: 100, what: "the survivor to run all eight jobs" },
      );
      const recoveredMs = Date.now() - killedAt;
      console.log(
        `eight jobs locked by the killed worker finished by the survivor ${recoveredMs} ms after the kill (heartbeat timeout ${timeoutMs} ms)`,
      );
      expect(recoveredMs).toBeLessThan(timeoutMs + marginMs);
      expect(runs.every((run: { pid: number }) => run.pid === survivor.child.pid)).toBe(true);
      // The locked attempt counts, run or not; the queue's second job was never locked before.
      const attempts = Object.fromEntries(
        runs.map((run: { job_id: string; attempt: number }) => [run.job_id, run.attempt]),
      );
      expect(attempts).toEqual(Object.fromEntries(ids.map((id, i) => [id, i === 7 ? 1 : 2])));
      const order = runs.map((run: { job_id: string }) => run.job_id);
      expect(order.indexOf(ids[6]!)).toBeLessThan(order.indexOf(ids[7]!));

      const { rows: audit } = await pool.query(
        "select detail->>'released_jobs' as released from steward.audit_log where action = 'release_dead_worker' and target = $1",
        [victimPool],
      );
      expect(audit).toEqual([{ released: "7" }]);
      expect((await pool.query("select count(*)::int as n from steward.dead_letters")).rows[0].n).toBe(0);
      survivor.child.kill("SIGTERM");
      expect((await survivor.exited).code).toBe(0);
    },
  );

  it("unlocks only the jobs of pools whose heartbeat went stale, never those of pools without a row", async () => {
    const { pool } = context.db;
    await pool.query("select steward.set_setting('workers.heartbeat_timeout', '60 seconds')");
    await pool.query(`
      insert into steward.workers (pool_id, host, pid, heartbeat_at) values
        ('pool-stale', 'db1', 11, now() - interval '61 seconds'),
        ('pool-alive', 'db2', 12, now() - interval '50 seconds')`);
    const lock = async (poolId: string) => {
      const { rows } = await pool.query("select id from graphile_worker.add_job('test_other', '{}')");
      await pool.query(
        "update graphile_worker._private_jobs set attempts = 1, locked_by = $2, locked_at = now() - interval '1 hour' where id = $1",
        [rows[0].id, poolId],
      );
    };
    await lock("pool-stale");
    await lock("pool-stale");
    await lock("pool-alive");
    await lock("pool-plain-graphile-worker");

    const { rows } = await pool.query("select pool_id, host, pid, released_jobs from steward.release_dead_workers()");
    expect(rows).toEqual([{ pool_id: "pool-stale", host: "db1", pid: 11, released_jobs: "2" }]);
    expect(await lockedJob("pool-stale")).toBe(0);
    expect(await lockedJob("pool-alive")).toBe(1);
    expect(await lockedJob("pool-plain-graphile-worker")).toBe(1);
    const { rows: left } = await pool.query("select pool_id from steward.workers order by 1");
    expect(left).toEqual([{ pool_id: "pool-alive" }]);
    // A second sweep finds nothing more.
    expect((await pool.query("select * from steward.release_dead_workers()")).rows).toEqual([]);
    await pool.query("delete from steward.workers; delete from graphile_worker._private_jobs");
  });

  it("registers a worker while it runs and removes its row when it stops", async () => {
    const worker = await startTestWorker(context.db);
    const { pool } = context.db;
    const row = await eventually(async () => (await pool.query("select * from steward.workers")).rows[0]);
    expect(row).toMatchObject({ pid: process.pid, pool_id: expect.stringMatching(/^pool-/) });

    // Presumed dead (row swept) while alive: the next beat registers it again.
    await pool.query("delete from steward.workers");
    await worker.heartbeat.tick();
    expect((await pool.query("select pool_id from steward.workers")).rows).toEqual([{ pool_id: row.pool_id }]);

    await worker.stop();
    expect((await pool.query("select * from steward.workers")).rows).toEqual([]);
  });
});

describe("a clean stop", () => {
  it("leaves no job locked when its local queue still held fetched jobs, and logs no error", async () => {
    const { pool } = context.db;
    const lines: { level: number; msg: string; released?: number }[] = [];
    const logger = pino(
      { level: "debug" },
      new Writable({
        write(chunk, _encoding, done) {
          for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
          done();
        },
      }),
    );
    let started = 0;
    const slow = defineTask<object>({
      identifier: "test_slow_stop",
      description: "takes 300 ms",
      parse: (payload) => payload as object,
      async run() {
        started++;
        await new Promise((resolve) => setTimeout(resolve, 300));
      },
    });
    // max_attempts 1: a job whose attempt a stop kept would never run.
    await pool.query(
      "select graphile_worker.add_job('test_slow_stop', '{}'::json, max_attempts => 1) from generate_series(1, 20)",
    );
    // Concurrency 1 with the default local queue (8 jobs): one runs while seven wait in memory.
    const worker = await startWorker({
      url: context.db.url,
      config: testConfig({ concurrency: 1 }),
      logger,
      tasks: [slow],
      schedules: [],
      health: false,
    });
    await eventually(async () => started >= 1, { what: "the first job to start" });
    await worker.stop();

    // Every job left was never run: none is locked, none has spent an attempt, its queue is free.
    const { rows } = await pool.query<{ locked: number; left: number; attempted: number }>(
      `select count(*) filter (where locked_at is not null)::int as locked, count(*)::int as left,
              count(*) filter (where attempts > 0)::int as attempted
         from graphile_worker._private_jobs`,
    );
    expect(rows[0]).toEqual({ locked: 0, left: 20 - started, attempted: 0 });
    expect(lines.filter((line) => line.level >= 50).map((line) => line.msg)).toEqual([]);
  });
});
