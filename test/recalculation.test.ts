import type pg from "pg";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { PermanentError } from "../src/errors.ts";
import {
  computeBatch,
  progressBar,
  progressText,
  readRun,
  startRecalculation,
  type RecalcRun,
} from "../src/worker/recalculation.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { recalculate } from "../tasks/recalculate.ts";
import { recalculateBatch } from "../tasks/recalculate_batch.ts";
import { eventually, runCli, spawnCli, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
const TASKS = [recalculate, recalculateBatch];
let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

beforeAll(async () => {
  await context.db.pool.query(`
    create schema calc;
    create table calc.items (id integer primary key);
    insert into calc.items select generate_series(1, 10000);
    -- What compute committed, one row per key computed.
    create table calc.calls (recalc text not null, key jsonb not null);
    -- Keys whose batch raises; per-recalculation sleep in seconds.
    create table calc.poison (recalc text not null, key jsonb not null);
    create table calc.delays (recalc text primary key, seconds float8 not null);
  `);
});

/**
 * A recalculation named `name` over calc.items (ids up to `keys`) whose compute records each key
 * it commits in calc.calls and counts every call, committed or not, in a sequence (sequences are
 * not rolled back).
 */
async function registerCounter(pool: pg.Pool, name: string, options: { keys?: number; batchSize?: number } = {}) {
  const fn = `calc.compute_${name}`;
  await pool.query(`
    create sequence calc.attempts_${name};
    create function ${fn}(keys jsonb) returns integer language plpgsql as $$
    begin
      perform nextval('calc.attempts_${name}');
      if exists (select from calc.poison p where p.recalc = '${name}' and keys @> jsonb_build_array(p.key)) then
        raise exception 'poisoned key in this batch';
      end if;
      perform pg_sleep(coalesce((select seconds from calc.delays where recalc = '${name}'), 0));
      insert into calc.calls (recalc, key) select '${name}', k from jsonb_array_elements(keys) as k;
      return jsonb_array_length(keys);
    end $$;`);
  await pool.query("select steward.register_recalculation($1, $2, $3::regprocedure, $4)", [
    name,
    `select to_jsonb(id) as key from calc.items where id <= ${options.keys ?? 10000}`,
    `${fn}(jsonb)`,
    options.batchSize ?? 500,
  ]);
}

async function callCounts(pool: pg.Pool, name: string) {
  const { rows } = await pool.query(
    `select count(*)::int as calls, count(distinct key)::int as keys,
            (select count(*)::int from (select key from calc.calls where recalc = $1 group by key having count(*) > 1) d) as repeated,
            (select last_value::int from pg_sequences where schemaname = 'calc' and sequencename = 'attempts_' || $1) as attempts
       from calc.calls where recalc = $1`,
    [name],
  );
  return rows[0] as { calls: number; keys: number; repeated: number; attempts: number | null };
}

async function waitForEnd(pool: pg.Pool, run: number, timeoutMs = 120_000): Promise<RecalcRun> {
  return eventually(
    async () => {
      const current = await readRun(pool, run);
      return current?.status !== "running" && current;
    },
    { timeoutMs, intervalMs: 200, what: `run ${run} to end` },
  );
}

async function batchJobs(pool: pg.Pool, run: number) {
  const { rows } = await pool.query(
    "select key, attempts, max_attempts, priority, locked_at from graphile_worker.jobs where key like $1 order by key",
    [`steward:recalc:${run}:%`],
  );
  return rows;
}

describe("register_recalculation", () => {
  const bad: Array<[string, unknown[], string, RegExp]> = [
    [
      "a compute function taking an integer",
      ["bad1", "select to_jsonb(1) as key", "pg_catalog.abs(integer)", 500],
      "22023",
      /one jsonb argument/,
    ],
    [
      "a keys_sql that does not parse",
      ["bad2", "selec key from x", "pg_catalog.jsonb_typeof(jsonb)", 500],
      "22023",
      /keys_sql is not a query/,
    ],
    [
      "a keys_sql naming an unqualified table",
      ["bad3", "select to_jsonb(id) as key from items", "pg_catalog.jsonb_typeof(jsonb)", 500],
      "22023",
      /relation "items" does not exist/,
    ],
    [
      "a keys_sql without a key column",
      ["bad4", "select to_jsonb(id) as id from calc.items", "pg_catalog.jsonb_typeof(jsonb)", 500],
      "22023",
      /column s.key does not exist/,
    ],
    [
      "a key of type integer",
      ["bad5", "select id as key from calc.items", "pg_catalog.jsonb_typeof(jsonb)", 500],
      "22023",
      /key of type integer, not jsonb/,
    ],
    [
      "two statements in keys_sql",
      ["bad6", "select to_jsonb(1) as key; delete from calc.items", "pg_catalog.jsonb_typeof(jsonb)", 500],
      "22023",
      /keys_sql is not a query/,
    ],
    [
      "a batch size of 0",
      ["bad7", "select to_jsonb(1) as key", "pg_catalog.jsonb_typeof(jsonb)", 0],
      "22023",
      /batch_size must be from 1 to 10000, got 0/,
    ],
    [
      "a batch size of 10001",
      ["bad8", "select to_jsonb(1) as key", "pg_catalog.jsonb_typeof(jsonb)", 10001],
      "22023",
      /got 10001/,
    ],
    [
      "a name with spaces",
      ["bad name", "select to_jsonb(1) as key", "pg_catalog.jsonb_typeof(jsonb)", 500],
      "22023",
      /is not allowed/,
    ],
    ["a null keys_sql", ["bad9", null, "pg_catalog.jsonb_typeof(jsonb)", 500], "22004", /must not be null/],
  ];
  it.each(bad)("refuses %s with its SQLSTATE and a hint, changing nothing", async (_what, args, code, message) => {
    const { pool } = context.db;
    const count =
      "select (select count(*) from steward.recalculations) as r, (select count(*) from steward.audit_log) as a";
    const before = (await pool.query(count)).rows[0];
    const error = await pool.query("select steward.register_recalculation($1, $2, $3::regprocedure, $4)", args).then(
      () => undefined,
      (e: unknown) => e as { code: string; message: string; hint?: string },
    );
    expect(error).toMatchObject({ code });
    expect(error!.message).toMatch(message);
    if (code === "22023") expect(error!.hint).toBeTruthy();
    expect((await pool.query(count)).rows[0]).toEqual(before);
    // Nothing ran: keys_sql is planned, never executed.
    expect((await pool.query("select count(*)::int as n from calc.items")).rows[0].n).toBe(10000);
  });

  it("replaces a registration and audits both", async () => {
    const { pool } = context.db;
    await pool.query(
      "select steward.register_recalculation('twice', 'select to_jsonb(1) as key', 'pg_catalog.jsonb_typeof(jsonb)', 10)",
    );
    await pool.query(
      "select steward.register_recalculation('twice', 'select to_jsonb(2) as key;', 'pg_catalog.jsonb_typeof(jsonb)')",
    );
    const { rows } = await pool.query("select keys_sql, batch_size from steward.recalculations where name = 'twice'");
    expect(rows).toEqual([{ keys_sql: "select to_jsonb(2) as key", batch_size: 500 }]);
    const { rows: audits } = await pool.query(
      "select detail->>'replaced' as replaced from steward.audit_log where action = 'register_recalculation' and target = 'twice' order by id",
    );
    expect(audits.map((a) => a.replaced)).toEqual(["false", "true"]);
  });
});

describe("a recalculation run", () => {
  it("computes every one of 10,000 keys exactly once, in 20 batch jobs", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "full");
    worker = await startTestWorker(context.db, { tasks: TASKS });
    await pool.query(`select graphile_worker.add_job('recalculate', '{"name": "full"}'::json)`);
    const started = await eventually(
      async () =>
        (await pool.query("select id::int from steward.recalc_runs where name = 'full'")).rows[0]?.id as
          number | undefined,
      { what: "the run to start" },
    );
    const run = await waitForEnd(pool, started);
    expect(run).toMatchObject({
      status: "completed",
      scope: "all",
      keysTotal: 10000,
      keysDone: 10000,
      keysFailed: 0,
      batchesTotal: 20,
      batchesDone: 20,
      batchesFailed: 0,
      error: null,
    });
    expect(await callCounts(pool, "full")).toEqual({ calls: 10000, keys: 10000, repeated: 0, attempts: 20 });
    expect(await batchJobs(pool, started)).toEqual([]);
    const { rows } = await pool.query(
      "select count(*)::int as n from steward.recalc_batches where run_id = $1 and status = 'done' and keys is null and key_count = 500",
      [started],
    );
    expect(rows[0].n).toBe(20);
  });

  it("joins 12 concurrent requests for the same keys into one run, refuses other keys, and repairs lost jobs", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "joined", { keys: 2000, batchSize: 100 });
    const results = await Promise.all(
      Array.from({ length: 12 }, () =>
        startRecalculation(pool, "joined").then((s) => ({ id: s.run.id, joined: s.joined })),
      ),
    );
    expect(new Set(results.map((r) => r.id)).size).toBe(1);
    expect(results.filter((r) => !r.joined)).toHaveLength(1);
    const run = results[0]!.id;
    const jobs = await batchJobs(pool, run);
    expect(jobs).toHaveLength(20);
    // Batch jobs queue behind other work and have recalculation.max_attempts attempts.
    expect(jobs[0]).toMatchObject({ priority: 10, max_attempts: 5, attempts: 0 });

    const before = (await pool.query("select count(*)::int as n from steward.recalc_runs")).rows[0].n;
    await expect(startRecalculation(pool, "joined", [1, 2, 3])).rejects.toMatchObject({
      code: "P0001",
      message: `recalculation "joined" has run ${run} in progress over other keys`,
    });
    expect((await pool.query("select count(*)::int as n from steward.recalc_runs")).rows[0].n).toBe(before);

    // Three jobs lost (deleted by hand); joining again gives exactly those three back.
    await pool.query("delete from graphile_worker._private_jobs where key in ($1, $2, $3)", [
      `steward:recalc:${run}:0`,
      `steward:recalc:${run}:7`,
      `steward:recalc:${run}:19`,
    ]);
    expect(await batchJobs(pool, run)).toHaveLength(17);
    const again = await startRecalculation(pool, "joined");
    expect(again).toMatchObject({ joined: true, run: { id: run } });
    expect(await batchJobs(pool, run)).toHaveLength(20);

    worker = await startTestWorker(context.db, { tasks: TASKS });
    expect(await waitForEnd(pool, run)).toMatchObject({ status: "completed", keysDone: 2000, batchesDone: 20 });
    expect(await callCounts(pool, "joined")).toEqual({ calls: 2000, keys: 2000, repeated: 0, attempts: 20 });
    const { rows: runs } = await pool.query("select count(*)::int as n from steward.recalc_runs where name = 'joined'");
    expect(runs[0].n).toBe(1);
  });

  it("recomputes given keys only, distinct, and ends a run with no keys at once", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "some", { batchSize: 2 });
    const { run } = await startRecalculation(pool, "some", [5, 6, 5, 7, { odd: "key" }]);
    expect(run).toMatchObject({ scope: "keys", keysTotal: 4, batchesTotal: 2, status: "running" });
    const empty = await startRecalculation(pool, "some", []).catch((e: { code: string }) => e.code);
    expect(empty).toBe("P0001"); // the first run is still in progress, over other keys
    worker = await startTestWorker(context.db, { tasks: TASKS });
    await waitForEnd(pool, run.id);
    const { rows } = await pool.query("select key from calc.calls where recalc = 'some' order by key");
    expect(rows.map((r) => r.key)).toEqual([5, 6, 7, { odd: "key" }]);
    const none = await startRecalculation(pool, "some", []);
    expect(none.run).toMatchObject({ status: "completed", keysTotal: 0, batchesTotal: 0 });
    expect(none.run.finishedAt).not.toBeNull();
  });

  it("fails a batch whose compute raises after its attempts without stopping the others, and heals when it is replayed", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "poisoned", { keys: 1000, batchSize: 100 });
    await pool.query(`insert into calc.poison values ('poisoned', '250'), ('poisoned', '777')`);
    await pool.query("select steward.set_setting('recalculation.max_attempts', '2')");
    try {
      worker = await startTestWorker(context.db, { tasks: TASKS });
      const { run } = await startRecalculation(pool, "poisoned");
      const ended = await waitForEnd(pool, run.id);
      expect(ended).toMatchObject({
        status: "failed",
        keysDone: 800,
        keysFailed: 200,
        batchesDone: 8,
        batchesFailed: 2,
        error: "2 of 10 batches failed; batch 2: poisoned key in this batch",
      });
      const { rows: failed } = await pool.query(
        "select batch, attempts, last_error, jsonb_array_length(keys) as keys from steward.recalc_batches where run_id = $1 and status = 'failed' order by batch",
        [run.id],
      );
      expect(failed).toEqual([
        { batch: 2, attempts: 2, last_error: "poisoned key in this batch", keys: 100 },
        { batch: 7, attempts: 2, last_error: "poisoned key in this batch", keys: 100 },
      ]);
      expect(await callCounts(pool, "poisoned")).toMatchObject({ calls: 800, repeated: 0, attempts: 12 });

      // The failed jobs are out of attempts: they are in the dead letters; replaying them heals the run.
      await pool.query("delete from calc.poison");
      const { rows } = await pool.query(
        "select id from steward.dead_letters where task_identifier = 'recalculate_batch' and (payload->>'run')::bigint = $1 order by id",
        [run.id],
      );
      expect(rows).toHaveLength(2);
      for (const row of rows) await pool.query("select steward.replay_dead_letter($1)", [row.id]);
      const healed = await eventually(
        async () => {
          const current = await readRun(pool, run.id);
          return current?.status === "completed" && current;
        },
        { timeoutMs: 60_000, what: "the replayed batches to heal the run" },
      );
      expect(healed).toMatchObject({ keysDone: 1000, keysFailed: 0, batchesDone: 10, batchesFailed: 0, error: null });
      expect(await callCounts(pool, "poisoned")).toMatchObject({ calls: 1000, keys: 1000, repeated: 0 });
    } finally {
      await pool.query("select steward.set_setting('recalculation.max_attempts', '5')");
    }
  });

  it("fails a batch that runs past recalculation.batch_timeout, undoing its work", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "slow", { keys: 20, batchSize: 10 });
    await pool.query("insert into calc.delays values ('slow', 2)");
    await pool.query("select steward.set_setting('recalculation.batch_timeout', '300 milliseconds')");
    await pool.query("select steward.set_setting('recalculation.max_attempts', '1')");
    try {
      worker = await startTestWorker(context.db, { tasks: TASKS });
      const { run } = await startRecalculation(pool, "slow");
      expect(await waitForEnd(pool, run.id)).toMatchObject({
        status: "failed",
        batchesFailed: 2,
        error: "2 of 2 batches failed; batch 0: canceling statement due to statement timeout",
      });
      expect(await callCounts(pool, "slow")).toMatchObject({ calls: 0, attempts: 2 });
    } finally {
      await pool.query("select steward.set_setting('recalculation.batch_timeout', '10 minutes')");
      await pool.query("select steward.set_setting('recalculation.max_attempts', '5')");
    }
  });

  it("completes after the worker is killed mid-run, without recomputing finished batches", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "killed", { batchSize: 250 });
    await pool.query("insert into calc.delays values ('killed', 0.15)");
    const { run } = await startRecalculation(pool, "killed");
    expect(run.batchesTotal).toBe(40);

    const { child, output, closed } = spawnCli(["worker"], {
      DATABASE_URL: context.db.url,
      STEWARD_CONCURRENCY: "4",
      STEWARD_HEALTH_PORT: "0",
    });
    await eventually(async () => ((await readRun(pool, run.id))?.batchesDone ?? 0) >= 8, {
      timeoutMs: 90_000,
      intervalMs: 100,
      what: `8 batches done by the child worker (stderr: ${output().stderr})`,
    });
    child.kill("SIGKILL");
    expect((await closed).signal).toBe("SIGKILL");

    const { rows: doneBefore } = await pool.query<{ batch: number }>(
      "select batch from steward.recalc_batches where run_id = $1 and status = 'done'",
      [run.id],
    );
    expect(doneBefore.length).toBeLessThan(40);
    // What an operator does for a crashed worker (else graphile-worker frees its jobs after 4 hours).
    const { rows: locked } = await pool.query(
      "select array_agg(distinct locked_by) as workers from graphile_worker.jobs where locked_by is not null",
    );
    if (locked[0].workers) await pool.query("select graphile_worker.force_unlock_workers($1)", [locked[0].workers]);

    worker = await startTestWorker(context.db, { tasks: TASKS });
    const ended = await waitForEnd(pool, run.id);
    expect(ended).toMatchObject({ status: "completed", keysDone: 10000, batchesDone: 40 });
    const counts = await callCounts(pool, "killed");
    expect(counts).toMatchObject({ calls: 10000, keys: 10000, repeated: 0 });
    // Calls that did not commit were the ones in flight when the worker died: at most 4.
    expect(counts.attempts).toBeGreaterThanOrEqual(40);
    expect(counts.attempts).toBeLessThanOrEqual(44);
  }, 180_000);

  it("cancels a run: its pending batches do nothing and a new run may start", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "cancelled", { keys: 1000, batchSize: 100 });
    const { run } = await startRecalculation(pool, "cancelled");
    const { rows } = await pool.query("select steward.cancel_recalculation($1) as n", [run.id]);
    expect(rows[0].n).toBe(10);
    await expect(pool.query("select steward.cancel_recalculation($1)", [run.id])).rejects.toMatchObject({
      code: "P0001",
    });
    expect(await readRun(pool, run.id)).toMatchObject({
      status: "cancelled",
      error: "cancelled with 10 of 10 batches pending",
    });
    worker = await startTestWorker(context.db, { tasks: TASKS });
    await eventually(async () => (await batchJobs(pool, run.id)).length === 0, { what: "the cancelled jobs to run" });
    expect(await callCounts(pool, "cancelled")).toMatchObject({ calls: 0 });
    const next = await startRecalculation(pool, "cancelled");
    expect(next).toMatchObject({ joined: false });
    expect(next.run.id).not.toBe(run.id);
    await waitForEnd(pool, next.run.id);
  });

  it("refuses an unknown name (P0002, a permanent error for the task) and unregisters only when idle", async () => {
    const { pool } = context.db;
    await expect(startRecalculation(pool, "nope")).rejects.toMatchObject({
      code: "P0002",
      message: 'unknown recalculation "nope"',
    });
    await expect(computeBatch(pool, 987654, 0, false)).rejects.toBeInstanceOf(PermanentError);
    expect(() => recalculate.parse({ name: "x", keys: "all" })).toThrow(PermanentError);
    expect(() => recalculateBatch.parse({ run: 1 })).toThrow(/"batch" is required/);
    expect(() => recalculate.parse({ name: "x", extra: 1 })).toThrow(/unknown payload field "extra"/);

    await registerCounter(pool, "removed", { keys: 10 });
    const { run } = await startRecalculation(pool, "removed");
    await expect(pool.query("select steward.unregister_recalculation('removed')")).rejects.toMatchObject({
      code: "P0001",
    });
    await pool.query("select steward.cancel_recalculation($1)", [run.id]);
    expect((await pool.query("select steward.unregister_recalculation('removed') as r")).rows[0].r).toBe(true);
    expect((await pool.query("select steward.unregister_recalculation('removed') as r")).rows[0].r).toBe(false);
    expect(await readRun(pool, run.id)).toMatchObject({ status: "cancelled" });
  });
});

describe("progress", () => {
  const run: RecalcRun = {
    id: 3,
    name: "metric_confidence",
    status: "running",
    scope: "all",
    keysTotal: 25000,
    keysDone: 12500,
    keysFailed: 0,
    batchesTotal: 50,
    batchesDone: 25,
    batchesFailed: 0,
    startedAt: new Date(),
    finishedAt: null,
    elapsedSeconds: 5,
    error: null,
  };
  it("draws a bar with counts, rate and time left", () => {
    expect(progressBar(run, 10)).toBe("[█████░░░░░] 50%  12,500/25,000 keys  25/50 batches  2,500 keys/s  eta 5.0s");
    expect(progressText({ ...run, batchesFailed: 1, status: "failed" })).toBe(
      "52%  12,500/25,000 keys  26/50 batches  1 failed  2,500 keys/s  5.0s",
    );
  });
});

describe("steward recalc", () => {
  it("exits 2 on bad arguments, starting nothing", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "cli_bad", { keys: 10 });
    const env = { DATABASE_URL: context.db.url };
    const runs = async () => (await pool.query("select count(*)::int as n from steward.recalc_runs")).rows[0].n;
    const before = await runs();
    for (const [args, message] of [
      [["recalc"], "expected 1 argument"],
      [["recalc", "cli_bad", "--all", "--keys", "[1]"], "give --all or --keys, not both"],
      [["recalc", "cli_bad", "--keys", "{1"], "--keys is not JSON"],
      [["recalc", "cli_bad", "--keys", '{"a": 1}'], "--keys must be a JSON array"],
      [["recalc", "cli_bad", "--all", "--timeout", "soon"], "is not a duration"],
      [["recalc", "no_such", "--all"], 'unknown recalculation "no_such"; registered: '],
    ] as Array<[string[], string]>) {
      const result = await runCli(args, env);
      expect(result.code, args.join(" ")).toBe(2);
      expect(result.stderr).toContain(message);
      expect(result.stderr).toContain("usage: steward recalc");
    }
    expect(await runs()).toBe(before);
  });

  it("follows a run with plain progress lines and exits 0 when it completed, 1 when it failed", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "cli_ok", { keys: 3000, batchSize: 100 });
    await pool.query("insert into calc.delays values ('cli_ok', 0.2)");
    await registerCounter(pool, "cli_fail", { keys: 300, batchSize: 100 });
    await pool.query(`insert into calc.poison values ('cli_fail', '150')`);
    await pool.query("select steward.set_setting('recalculation.max_attempts', '1')");
    worker = await startTestWorker(context.db, { tasks: TASKS });
    const env = { DATABASE_URL: context.db.url };
    try {
      const ok = await runCli(["recalc", "cli_ok", "--all"], env, 120_000);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/^started run \d+ of cli_ok: 3,000 keys in 30 batches\n/);
      expect(ok.stdout).toMatch(/\d+% {2}[\d,]+\/3,000 keys {2}\d+\/30 batches/);
      expect(ok.stdout).toMatch(/run \d+ of cli_ok completed: 3,000 of 3,000 keys in 30 of 30 batches/);
      expect(ok.stdout).not.toContain("█");

      const failed = await runCli(["recalc", "cli_fail", "--all"], env, 120_000);
      expect(failed.code).toBe(1);
      expect(failed.stdout).toMatch(/run \d+ of cli_fail failed: 200 of 300 keys in 2 of 3 batches/);
      expect(failed.stdout).toContain("1 of 3 batches failed; batch 1: poisoned key in this batch");
      expect(failed.stdout).toContain("  batch 1 (100 keys, 1 attempts): poisoned key in this batch");

      // With neither --all nor --keys: the last run, and its outcome as the exit code.
      const last = await runCli(["recalc", "cli_ok"], env);
      expect(last.code).toBe(0);
      expect(last.stdout).toMatch(/^last run \d+ of cli_ok/);
    } finally {
      await pool.query("select steward.set_setting('recalculation.max_attempts', '5')");
    }
  }, 180_000);

  it("starts without following with --no-wait", async () => {
    const { pool } = context.db;
    await registerCounter(pool, "cli_nowait", { keys: 10 });
    const result = await runCli(["recalc", "cli_nowait", "--keys", "[1, 2]", "--no-wait"], {
      DATABASE_URL: context.db.url,
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^started run (\d+) of cli_nowait: 2 keys in 1 batches\n$/);
    const { rows } = await pool.query(
      "select claimed_actor, detail->>'keys' as keys from steward.audit_log where action = 'start_recalculation' and target = 'cli_nowait'",
    );
    expect(rows).toEqual([{ claimed_actor: expect.stringMatching(/^cli:/), keys: "2" }]);
  });
});
