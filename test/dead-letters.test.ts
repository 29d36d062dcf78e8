import fs from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { runMigrations } from "graphile-worker";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { withDatabase } from "../src/embedded.ts";
import { graphileLogger } from "../src/logger.ts";
import { MIGRATIONS_FOLDER, migrate } from "../src/migrate.ts";
import { payloadObject, requiredString } from "../src/worker/payload.ts";
import { defineTask } from "../src/worker/task.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { runCommand } from "../src/cli/commands/run.ts";
import {
  adminUrl,
  eventually,
  runCli,
  startTestWorker,
  testConfig,
  testLogger,
  useTestDatabase,
  withAdmin,
} from "./helpers.ts";

const context = useTestDatabase();
let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}
/** Jobs fail with the message in their payload; `{"hold": name}` waits until released(name). */
const holds = new Map<string, { started: ReturnType<typeof deferred>; release: ReturnType<typeof deferred> }>();
function hold(name: string) {
  let entry = holds.get(name);
  if (!entry) {
    entry = { started: deferred(), release: deferred() };
    holds.set(name, entry);
  }
  return entry;
}
const flaky = defineTask<{ fail?: string; hold?: string }>({
  identifier: "test_flaky",
  description: "fails with payload.fail, after waiting for payload.hold to be released",
  parse: (payload) => payload as { fail?: string; hold?: string },
  async run({ fail, hold: name }) {
    if (name) {
      hold(name).started.resolve();
      await hold(name).release.promise;
    }
    if (fail) throw new Error(fail);
  },
});
const strict = defineTask<{ view: string }>({
  identifier: "test_strict",
  description: "takes {view: string}",
  parse(payload) {
    const object = payloadObject("test_strict", payload, ["view"]);
    return { view: requiredString("test_strict", object, "view") };
  },
  async run() {},
});

async function addJob(
  payload: object,
  options: { task?: string; maxAttempts?: number; key?: string; queue?: string } = {},
) {
  const { rows } = await context.db.pool.query(
    "select id::text from graphile_worker.add_job($1, $2::json, queue_name => $3, max_attempts => $4, job_key => $5)",
    [
      options.task ?? "test_flaky",
      JSON.stringify(payload),
      options.queue ?? null,
      options.maxAttempts ?? null,
      options.key ?? null,
    ],
  );
  return rows[0].id as string;
}

async function jobRow(id: string) {
  const { rows } = await context.db.pool.query("select * from graphile_worker.jobs where id = $1", [id]);
  return rows[0];
}

async function deadLetterOf(id: string) {
  const { rows } = await context.db.pool.query(
    "select * from steward.dead_letters where source = 'job' and original_id = $1",
    [id],
  );
  return rows[0];
}

/** Runs a failed job's next attempt now instead of after graphile-worker's backoff. */
async function retryNow(id: string) {
  await context.db.pool.query("select graphile_worker.reschedule_jobs(array[$1::bigint], run_at => now())", [id]);
  await context.db.pool.query(`select pg_notify('jobs:insert', '{"count":1}')`);
}

/** Everything a failing call could change. */
async function snapshot() {
  const { rows } = await context.db.pool.query(`
    select (select count(*)::int from graphile_worker.jobs) as jobs,
           (select coalesce(json_agg(d order by d.id), '[]') from steward.dead_letters d) as dead_letters,
           (select count(*)::int from steward.audit_log) as audits`);
  return rows[0];
}

async function insertDeadLetters(
  count: number,
  options: { failedAt?: string; source?: string; payload?: object } = {},
) {
  const { rows } = await context.db.pool.query(
    `insert into steward.dead_letters (source, task_identifier, payload, attempts, max_attempts, last_error, failed_at)
     select $2, case when $2 = 'job' then 'test_flaky' end, $3::jsonb, 3, 3, 'error ' || i, coalesce($4::timestamptz, now())
       from generate_series(1, $1) i
     returning id::text`,
    [count, options.source ?? "job", JSON.stringify(options.payload ?? { n: 1 }), options.failedAt ?? null],
  );
  return rows.map((row) => row.id as string);
}

describe("the move into the dead letters", () => {
  it("moves a job that fails its last attempt, in the same transaction, and frees its job key", async () => {
    worker = await startTestWorker(context.db, { tasks: [flaky] });
    const id = await addJob({ fail: "the sink said no" }, { maxAttempts: 2, key: "nightly-export", queue: "exports" });
    await eventually(async () => (await jobRow(id))?.attempts === 1 && !(await jobRow(id)).locked_at, {
      what: "the first failure",
    });
    expect(await deadLetterOf(id)).toBeUndefined();

    // Poll while the last attempt fails: the job must be in exactly one of the two tables.
    const seen = new Set<number>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const { rows } = await context.db.pool.query(
          `select (select count(*) from graphile_worker.jobs where id = $1)
                + (select count(*) from steward.dead_letters where original_id = $1) as n`,
          [id],
        );
        seen.add(Number(rows[0].n));
      }
    })();
    await retryNow(id);
    const letter = await eventually(() => deadLetterOf(id), { what: "the dead letter" });
    polling = false;
    await poller;
    expect([...seen]).toEqual([1]);

    expect(letter).toMatchObject({
      source: "job",
      task_identifier: "test_flaky",
      payload: { fail: "the sink said no" },
      queue_name: "exports",
      attempts: 2,
      max_attempts: 2,
      last_error: "the sink said no",
      job_key: "nightly-export",
      is_permanent: false,
      replayed_at: null,
    });
    expect(await jobRow(id)).toBeUndefined();
    const again = await addJob({}, { key: "nightly-export", task: "test_nobody_runs" });
    expect(again).not.toBe(id);
    expect(await jobRow(again)).toMatchObject({ key: "nightly-export", attempts: 0 });
  });

  it("dead-letters a job whose payload is bad after one attempt, naming what was wrong", async () => {
    worker = await startTestWorker(context.db, { tasks: [strict], health: true });
    const id = await addJob({ view: 42 }, { task: "test_strict", maxAttempts: 25 });
    const letter = await eventually(() => deadLetterOf(id), { what: "the dead letter" });
    expect(letter).toMatchObject({
      attempts: 1,
      max_attempts: 25,
      is_permanent: true,
      last_error: 'test_strict: "view" must be a non-empty string, got number',
    });
    expect(await jobRow(id)).toBeUndefined();
    const metrics = await eventually(async () => {
      const text = await (await fetch(`http://127.0.0.1:${worker!.healthPort}/metrics`)).text();
      return text.includes('steward_jobs_total{task="test_strict",outcome="failed"} 1') && text;
    });
    expect(metrics).toContain('steward_dead_letters{source="job",task="test_strict"} 1');
    expect(metrics).not.toContain('outcome="retried"');
  });

  it("dead-letters a job given up with permanently_fail_jobs", async () => {
    const id = await addJob({}, { task: "test_nobody_runs" });
    await context.db.pool.query("select graphile_worker.permanently_fail_jobs(array[$1::bigint], 'obsolete export')", [
      id,
    ]);
    expect(await jobRow(id)).toBeUndefined();
    expect(await deadLetterOf(id)).toMatchObject({
      task_identifier: "test_nobody_runs",
      last_error: "obsolete export",
      attempts: 25,
    });
  });

  it("dead-letters a job whose worker died on its last attempt when the lock is released, saying so", async () => {
    const { pool } = context.db;
    const id = await addJob({}, { task: "test_nobody_runs", maxAttempts: 1 });
    await pool.query(
      "update graphile_worker._private_jobs set attempts = 1, locked_by = 'pool-gone', locked_at = now() where id = $1",
      [id],
    );
    await pool.query("select graphile_worker.force_unlock_workers(array['pool-gone'])");
    expect(await jobRow(id)).toBeUndefined();
    expect((await deadLetterOf(id)).last_error).toBe(
      "the worker running attempt 1 (pool-gone) stopped without reporting an outcome; its lock was released",
    );
  });

  it("leaves a job superseded through its job key while running out of the dead letters", async () => {
    worker = await startTestWorker(context.db, { tasks: [flaky] });
    const id = await addJob({ hold: "superseded", fail: "stale world" }, { maxAttempts: 1, key: "report:7" });
    await hold("superseded").started.promise;
    const newer = await addJob({}, { key: "report:7" });
    expect(newer).not.toBe(id);
    hold("superseded").release.resolve();
    await eventually(async () => !(await jobRow(id)) && !(await jobRow(newer)), { what: "both jobs to finish" });
    expect(await deadLetterOf(id)).toBeUndefined();
    expect(await deadLetterOf(newer)).toBeUndefined();
    const { rows } = await context.db.pool.query("select count(*)::int as n from steward.job_marks");
    expect(rows[0].n).toBe(0);
  });

  it("leaves a job removed with remove_job while running out of the dead letters", async () => {
    worker = await startTestWorker(context.db, { tasks: [flaky] });
    const id = await addJob({ hold: "removed", fail: "too late" }, { maxAttempts: 5, key: "report:8" });
    await hold("removed").started.promise;
    await context.db.pool.query("select graphile_worker.remove_job('report:8')");
    hold("removed").release.resolve();
    await eventually(async () => !(await jobRow(id)), { what: "the job to leave" });
    expect(await deadLetterOf(id)).toBeUndefined();
  });
});

describe("replay_dead_letter", () => {
  it("queues the job again once, with its task, payload, queue and attempts, and audits it", async () => {
    const { pool } = context.db;
    const id = await addJob({ fail: "x" }, { maxAttempts: 4, queue: "replays" });
    await pool.query("select graphile_worker.permanently_fail_jobs(array[$1::bigint])", [id]);
    const letter = await deadLetterOf(id);
    const { rows } = await pool.query("select steward.replay_dead_letter($1)::text as id", [letter.id]);
    const job = await jobRow(rows[0].id);
    expect(job).toMatchObject({
      task_identifier: "test_flaky",
      queue_name: "replays",
      max_attempts: 4,
      attempts: 0,
      key: null,
    });
    const { rows: after } = await pool.query("select * from steward.dead_letters where id = $1", [letter.id]);
    expect(after[0]).toMatchObject({ replayed_as: rows[0].id, replayed_at: expect.any(Date) });
    const { rows: audit } = await pool.query(
      "select action, target, detail from steward.audit_log where action = 'replay_dead_letter'",
    );
    expect(audit).toContainEqual({
      action: "replay_dead_letter",
      target: `dead_letter:${letter.id}`,
      detail: { source: "job", task: "test_flaky", original_id: Number(id), new_id: Number(rows[0].id) },
    });

    const before = await snapshot();
    await expect(pool.query("select steward.replay_dead_letter($1)", [letter.id])).rejects.toMatchObject({
      code: "P0001",
      message: expect.stringContaining(`dead letter ${letter.id} was already replayed`),
    });
    expect(await snapshot()).toEqual(before);
  });

  it("refuses an id that does not exist, changing nothing", async () => {
    const before = await snapshot();
    await expect(context.db.pool.query("select steward.replay_dead_letter(987654)")).rejects.toMatchObject({
      code: "P0002",
      message: "dead letter 987654 does not exist",
      hint: expect.stringContaining("steward dlq list"),
    });
    expect(await snapshot()).toEqual(before);
  });

  it("replays exactly once when 12 connections replay one dead letter at the same moment", async () => {
    const [letter] = await insertDeadLetters(1);
    const jobsBefore = (await snapshot()).jobs;
    const clients = await Promise.all(Array.from({ length: 12 }, () => context.db.pool.connect()));
    try {
      const results = await Promise.allSettled(
        clients.map((client) => client.query("select steward.replay_dead_letter($1)", [letter])),
      );
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(failures.map((f) => f.reason.code)).toEqual(Array(11).fill("P0001"));
    } finally {
      clients.forEach((client) => client.release());
    }
    expect((await snapshot()).jobs).toBe(jobsBefore + 1);
  });

  it("re-queues an invalidation's tag through steward.enqueue_invalidation, once", async () => {
    const { pool } = context.db;
    const [letter] = await insertDeadLetters(1, { source: "invalidation", payload: { tag: "search:provider:7" } });
    const { rows } = await pool.query("select steward.replay_dead_letter($1)::text as id", [letter]);
    const { rows: pending } = await pool.query(
      "select id::text, tag from steward.invalidations where tag = 'search:provider:7'",
    );
    expect(pending).toEqual([{ id: rows[0].id, tag: "search:provider:7" }]);
    const { rows: replayed } = await pool.query("select replayed_as::text from steward.dead_letters where id = $1", [
      letter,
    ]);
    expect(replayed).toEqual([{ replayed_as: rows[0].id }]);
    const before = await snapshot();
    await expect(pool.query("select steward.replay_dead_letter($1)", [letter])).rejects.toMatchObject({
      code: "P0001",
    });
    expect(await snapshot()).toEqual(before);
    await pool.query("delete from steward.invalidations where tag = 'search:provider:7'");
  });
});

describe("purge_dead_letters and list_dead_letters", () => {
  it("purges only what failed longer ago than the age, returns the count, audits it", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.dead_letters");
    await insertDeadLetters(3, { failedAt: new Date(Date.now() - 40 * 86_400_000).toISOString() });
    await insertDeadLetters(2);
    const { rows } = await pool.query("select steward.purge_dead_letters('30 days') as purged");
    expect(rows[0].purged).toBe("3");
    expect((await snapshot()).dead_letters).toHaveLength(2);
    const { rows: audit } = await pool.query(
      "select detail from steward.audit_log where action = 'purge_dead_letters' order by id desc limit 1",
    );
    expect(audit[0].detail).toEqual({ older_than: "30 days", purged: 3 });
  });

  it("cleans up replayed dead letters past retention in batches, never the unreplayed", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.dead_letters");
    const old = await insertDeadLetters(5, { failedAt: "2020-01-01T00:00:00Z" });
    await pool.query(
      "update steward.dead_letters set replayed_at = now() - interval '31 days', replayed_as = 1 where id = any($1::bigint[])",
      [old.slice(0, 3)],
    );
    const recent = await insertDeadLetters(1);
    await pool.query("update steward.dead_letters set replayed_at = now(), replayed_as = 2 where id = $1", [recent[0]]);
    const deleted: number[] = [];
    for (;;) {
      const { rows } = await pool.query("select steward.run_cleanup_step('dead_letters', 2) as n");
      deleted.push(Number(rows[0].n));
      if (Number(rows[0].n) < 2) break;
    }
    expect(deleted).toEqual([2, 1]);
    const { rows } = await pool.query("select id::text from steward.dead_letters order by id");
    expect(rows.map((row) => row.id)).toEqual([...old.slice(3), recent[0]]);
  });

  it("cleans up the marks of jobs that are gone, in batches, and keeps those of jobs that exist", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.job_marks");
    const { rows: job } = await pool.query("select id from graphile_worker.add_job('test_marked', '{}')");
    await pool.query(
      `insert into steward.job_marks (job_id, reason)
       select $1, 'superseded' union all select -g, 'superseded' from generate_series(1, 3) g`,
      [job[0].id],
    );
    const deleted: number[] = [];
    for (;;) {
      const { rows } = await pool.query("select steward.run_cleanup_step('job_marks', 2) as n");
      deleted.push(Number(rows[0].n));
      if (Number(rows[0].n) < 2) break;
    }
    expect(deleted).toEqual([2, 1]);
    expect((await pool.query("select job_id from steward.job_marks")).rows).toEqual([{ job_id: job[0].id }]);
    await pool.query("delete from graphile_worker._private_jobs where id = $1", [job[0].id]);
    await pool.query("delete from steward.job_marks");
  });

  it("refuses a negative or missing age, changing nothing", async () => {
    const before = await snapshot();
    await expect(context.db.pool.query("select steward.purge_dead_letters('-1 day')")).rejects.toMatchObject({
      code: "22023",
    });
    await expect(context.db.pool.query("select steward.purge_dead_letters(null)")).rejects.toMatchObject({
      code: "22004",
    });
    expect(await snapshot()).toEqual(before);
  });

  it("pages through 130 dead letters newest first by keyset, ties included, each row once", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.dead_letters");
    // 60 share one failed_at: the id breaks the tie.
    await insertDeadLetters(60, { failedAt: "2026-01-01T00:00:00Z" });
    await insertDeadLetters(70);
    const seen: string[] = [];
    const pages: number[] = [];
    let after: string | null = null;
    for (;;) {
      const { rows }: { rows: { id: string; cursor: string }[] } = await pool.query(
        "select id::text, cursor from steward.list_dead_letters($1, 50)",
        [after],
      );
      if (rows.length === 0) break;
      pages.push(rows.length);
      seen.push(...rows.map((row) => row.id));
      after = rows.at(-1)!.cursor;
    }
    expect(pages).toEqual([50, 50, 30]);
    const { rows: expected } = await pool.query(
      "select d.id::text from steward.dead_letters d order by d.failed_at desc, d.id desc",
    );
    expect(seen).toEqual(expected.map((row) => row.id));
  });

  it("refuses a cursor it did not make and a page size out of range", async () => {
    const { pool } = context.db;
    await expect(pool.query("select * from steward.list_dead_letters('12; drop table x')")).rejects.toMatchObject({
      code: "22023",
      message: 'list_dead_letters: "12; drop table x" is not a cursor',
    });
    await expect(pool.query("select * from steward.list_dead_letters(null, 0)")).rejects.toMatchObject({
      code: "22023",
    });
    await expect(pool.query("select * from steward.list_dead_letters(null, 1001)")).rejects.toMatchObject({
      code: "22023",
    });
  });
});

describe("switching dead letters off and on", () => {
  const verifyDetail = async () =>
    (
      await context.db.pool.query(
        "select status, detail from steward.verify_installation() where name = 'dead-letter trigger'",
      )
    ).rows[0];

  it("leaves jobs that fail for good in graphile-worker's table while off, as without pg-steward, and moves them when on again", async () => {
    const { pool } = context.db;
    worker = await startTestWorker(context.db, { tasks: [flaky, strict] });
    expect((await pool.query("select steward.disable_dead_letters() as was")).rows[0].was).toBe(true);
    expect(await verifyDetail()).toMatchObject({
      status: "warn",
      detail: expect.stringContaining("enable_dead_letters"),
    });

    const failed = await addJob({ fail: "while off" }, { maxAttempts: 1 });
    const refused = await addJob({ view: "" }, { task: "test_strict", maxAttempts: 5 });
    await eventually(
      async () => {
        const rows = await Promise.all([jobRow(failed), jobRow(refused)]);
        return rows.every((row) => row && !row.locked_at && row.attempts >= row.max_attempts);
      },
      { what: "both jobs to fail for good" },
    );
    expect(await jobRow(failed)).toMatchObject({ attempts: 1, max_attempts: 1, last_error: "while off" });
    expect(await deadLetterOf(failed)).toBeUndefined();
    expect(await deadLetterOf(refused)).toBeUndefined();

    // On again: what failed while off moves, the permanent error with its own message and attempts.
    expect(Number((await pool.query("select steward.enable_dead_letters() as moved")).rows[0].moved)).toBe(2);
    expect(await jobRow(failed)).toBeUndefined();
    expect(await deadLetterOf(failed)).toMatchObject({ attempts: 1, last_error: "while off", is_permanent: false });
    expect(await deadLetterOf(refused)).toMatchObject({
      attempts: 1,
      max_attempts: 5,
      is_permanent: true,
      last_error: 'test_strict: "view" must be a non-empty string, got ""',
    });
    expect(await verifyDetail()).toMatchObject({ status: "ok" });

    // And the trigger moves the next one at once again.
    const after = await addJob({ fail: "after" }, { maxAttempts: 1 });
    await eventually(() => deadLetterOf(after), { what: "the dead letter of a job failing after the switch" });
    expect(await jobRow(after)).toBeUndefined();
    const { rows } = await pool.query(
      "select action, detail from steward.audit_log where action in ('disable_dead_letters', 'enable_dead_letters') order by id",
    );
    expect(rows).toEqual([
      { action: "disable_dead_letters", detail: { was_enabled: true } },
      { action: "enable_dead_letters", detail: { moved: 2 } },
    ]);
  });

  it("keeps the switch off through steward migrate", async () => {
    const { pool } = context.db;
    await pool.query("select steward.disable_dead_letters()");
    try {
      await migrate(context.db.url, testLogger());
      expect(await verifyDetail()).toMatchObject({ status: "warn" });
    } finally {
      await pool.query("select steward.enable_dead_letters()");
    }
  });
});

describe("installing the dead-letter trigger", () => {
  /** A new database with only graphile-worker's schema, for `work` to apply our migrations by hand. */
  async function freshDatabase(work: (client: pg.Client) => Promise<void>) {
    const name = `steward_fresh_${randomBytes(4).toString("hex")}`;
    await withAdmin((admin) => admin.query(`create database ${name}`));
    const url = withDatabase(adminUrl(), name);
    try {
      await runMigrations({ connectionString: url, logger: graphileLogger(testLogger()) });
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await work(client);
      } finally {
        await client.end();
      }
    } finally {
      await withAdmin((admin) => admin.query(`drop database if exists ${name} with (force)`));
    }
  }
  async function migrationBody(prefix: string): Promise<string> {
    const folder = path.join(MIGRATIONS_FOLDER, "committed");
    const file = (await fs.readdir(folder)).find((name) => name.startsWith(prefix))!;
    const text = await fs.readFile(path.join(folder, file), "utf8");
    return text.slice(text.indexOf("\n\n") + 2);
  }

  it("refuses a graphile-worker schema version it was not written for, with a clear message", async () => {
    await freshDatabase(async (client) => {
      await client.query(await migrationBody("000001"));
      await client.query("insert into graphile_worker.migrations (id) values (21)");
      await expect(client.query(await migrationBody("000002"))).rejects.toMatchObject({
        code: "P0001",
        message:
          "pg-steward's triggers on graphile-worker's tables were written for graphile-worker schema versions 18 to 20 (graphile-worker 0.16 to 0.18); this database has version 21",
        hint: expect.stringContaining("steward migrate"),
      });
      const { rows } = await client.query("select to_regclass('steward.dead_letters') as table");
      expect(rows[0].table).toBeNull();
    });
  });

  it("moves jobs that had already failed for good into the dead letters", async () => {
    await freshDatabase(async (client) => {
      await client.query(await migrationBody("000001"));
      await client.query(`
        select graphile_worker.add_job('old_export', '{"n": 1}', max_attempts => 2, job_key => 'old');
        select graphile_worker.add_job('old_export', '{"n": 2}');
        update graphile_worker._private_jobs set attempts = 2, last_error = 'gone' where key = 'old';`);
      await client.query(await migrationBody("000002"));
      const { rows } = await client.query(`
        select (select count(*)::int from graphile_worker.jobs) as jobs,
               (select json_agg(json_build_object('payload', payload, 'last_error', last_error, 'job_key', job_key))
                  from steward.dead_letters) as letters`);
      expect(rows[0]).toEqual({ jobs: 1, letters: [{ payload: { n: 1 }, last_error: "gone", job_key: "old" }] });
    });
  });
});

describe("steward dlq", () => {
  const env = () => ({ DATABASE_URL: context.db.url });

  it("lists, shows, replays and purges dead letters", async () => {
    await context.db.pool.query("delete from steward.dead_letters");
    const ids = await insertDeadLetters(3, { payload: { order: 42 } });
    const list = await runCli(["dlq", "list", "--max", "2"], env());
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^id\s+failed_at\s+source\s+task\s+attempts\s+replayed\s+last_error/);
    expect(list.stdout).toContain(`${ids[2]} `);
    expect(list.stdout).not.toContain(`\n${ids[0]} `);
    const next = /steward dlq list --after (\S+) --max 2/.exec(list.stdout)?.[1];
    expect(next).toBeDefined();
    const rest = await runCli(["dlq", "list", "--after", next!], env());
    expect(rest.stdout).toContain(`\n${ids[0]} `);

    const show = await runCli(["dlq", "show", ids[0]!], env());
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toContain('"order": 42');
    expect(show.stdout).toContain("last_error: error 1");

    const replay = await runCli(["dlq", "replay", ids[0]!], env());
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toMatch(new RegExp(`^replayed dead letter ${ids[0]} as \\d+`));
    const again = await runCli(["dlq", "replay", ids[0]!], env());
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`dead letter ${ids[0]} was already replayed`);
    expect(again.stderr).toContain("hint:");

    const purge = await runCli(["dlq", "purge", "--older-than", "0s"], env());
    expect(purge.code, purge.stderr).toBe(0);
    expect(purge.stdout).toBe("purged 3 dead letters older than 0s\n");
  });

  it("refuses bad arguments with usage (exit 2) and a missing dead letter (exit 1), changing nothing", async () => {
    await insertDeadLetters(1);
    const before = await snapshot();
    const cases: [string[], number, string][] = [
      [["dlq", "resurrect"], 2, 'unknown dlq action "resurrect"'],
      [["dlq", "show", "abc"], 2, 'dlq show: "abc" is not a dead letter id'],
      [["dlq", "replay"], 2, "dlq replay needs the id of a dead letter"],
      [["dlq", "purge"], 2, "dlq purge needs --older-than"],
      [["dlq", "purge", "--older-than", "soon"], 2, "--older-than:"],
      [["dlq", "purge", "--older-than=-3 days"], 2, "must not be negative"],
      [["dlq", "list", "--max", "5000"], 2, "--max must be an integer from 1 to 1000"],
      [["dlq", "list", "--after", "garbage"], 2, '--after: list_dead_letters: "garbage" is not a cursor'],
      [["dlq", "purge", "--older-than", "30"], 2, '--older-than needs a unit: "30" alone could mean seconds or days'],
      [["dlq", "purge", "--older-than", "0"], 2, "examples: 30d, 12h, 90m, '2 weeks', 0s"],
      [["dlq", "show", "987654"], 1, "dead letter 987654 does not exist"],
      [["dlq", "replay", "987654"], 1, "dead letter 987654 does not exist"],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, env())));
    cases.forEach(([args, code, message], i) => {
      expect({ args, code: results[i]!.code }).toEqual({ args, code });
      expect(results[i]!.stderr).toContain(message);
      if (code === 2) expect(results[i]!.stderr).toContain("usage: steward dlq");
    });
    expect(await snapshot()).toEqual(before);
  }, 90_000);
});

describe("steward run --wait", () => {
  it("reports a job that ended in the dead letters and exits 1", async () => {
    worker = await startTestWorker(context.db, { tasks: [strict] });
    // This file's test task is defined by the worker above, not by a module the command finds.
    const printed: string[] = [];
    const code = await runCommand.run(
      ["test_strict", '{"view": ""}'],
      { wait: true, timeout: "30s", "any-task": true },
      {
        config: testConfig({ databaseUrl: context.db.url }),
        logger: testLogger(),
        print: (line) => printed.push(line),
        isTerminal: false,
      },
    );
    expect(code).toBe(1);
    const id = /job (\d+)/.exec(printed[0]!)![1]!;
    const letter = await deadLetterOf(id);
    expect(printed.slice(1).join("\n")).toBe(
      `job ${id} failed for good after 1 attempt: test_strict: "view" must be a non-empty string, got ""\n` +
        `it is dead letter ${letter.id}: steward dlq show ${letter.id}`,
    );
  });
});
