import { afterEach, describe, expect, it } from "vitest";
import { durationBucket } from "../src/worker/job-stats.ts";
import { defineTask } from "../src/worker/task.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { eventually, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

const timed = defineTask<{ ms?: number; fail?: boolean }>({
  identifier: "test_timed",
  description: "sleeps payload.ms, then fails if payload.fail",
  parse: (payload) => payload as { ms?: number; fail?: boolean },
  async run({ ms, fail }) {
    if (ms) await new Promise((resolve) => setTimeout(resolve, ms));
    if (fail) throw new Error("asked to fail");
  },
});

async function pendingJobs(): Promise<number> {
  const { rows } = await context.db.pool.query("select count(*)::int as n from graphile_worker.jobs");
  return rows[0].n;
}

describe("job statistics", () => {
  it(
    "counts completed, retried and failed attempts per task and day, with avg and p95",
    { timeout: 60_000 },
    async () => {
      const { pool } = context.db;
      worker = await startTestWorker(context.db, { tasks: [timed], statsFlushMs: 600_000 });
      await pool.query(`
      select graphile_worker.add_jobs(array(
        select row('test_timed', json_build_object('ms', case when i <= 10 then 60 else 0 end),
                   null, null, null, null, null, null)::graphile_worker.job_spec
          from generate_series(1, 100) i))`);
      await pool.query(
        `select graphile_worker.add_job('test_timed', '{"fail": true}', max_attempts => 2) from generate_series(1, 3)`,
      );
      await eventually(
        async () =>
          (await pendingJobs()) === 3 &&
          (await pool.query("select 1 from graphile_worker.jobs where attempts = 1 and locked_at is null")).rowCount ===
            3,
        {
          timeoutMs: 30_000,
          what: "100 jobs done and 3 failed once",
        },
      );
      await pool.query(
        `update graphile_worker._private_jobs set run_at = now(); select pg_notify('jobs:insert', '{"count":3}')`,
      );
      await eventually(async () => (await pendingJobs()) === 0, {
        timeoutMs: 30_000,
        what: "the failing jobs to fail for good",
      });

      // Nothing is written per job: the counts reach the table with the flush.
      expect((await pool.query("select * from steward.job_stats")).rows).toEqual([]);
      await worker.stats.flush();
      const { rows } = await pool.query("select *, day::text as day from steward.job_stats");
      const today = new Date().toISOString().slice(0, 10);
      expect(rows).toHaveLength(1);
      const stats = rows[0];
      expect(stats).toMatchObject({ task: "test_timed", completed: "100", retried: "3", failed: "3" });
      expect(stats.day).toBe(today);
      // 106 attempts, 10 of them sleeping 60 ms: the 95th percentile (the 101st) is a slow one.
      expect(Number(stats.p95_ms)).toBeGreaterThanOrEqual(55);
      expect(Number(stats.avg_ms)).toBeGreaterThanOrEqual((10 * 60) / 106);
      expect(Number(stats.avg_ms)).toBeLessThan(Number(stats.p95_ms));
      const { rows: buckets } = await pool.query("select count(*)::int as n from steward.job_stat_durations");
      expect(buckets[0].n).toBeLessThan(20);
    },
  );

  it("adds up exactly when 16 connections write the same days and tasks at once", async () => {
    const { pool } = context.db;
    await pool.query("truncate steward.job_stat_counts, steward.job_stat_durations");
    const batch = (reversed: boolean) => {
      const rows = ["a", "b", "c", "d"].flatMap((task) =>
        ["2026-03-01", "2026-03-02"].map((day) => ({
          task: `test_${task}`,
          day,
          completed: 2,
          retried: 1,
          failed: 1,
          total_ms: 10,
          durations: { "0": 3, "8": 1 },
        })),
      );
      return JSON.stringify(reversed ? rows.reverse() : rows);
    };
    const clients = await Promise.all(Array.from({ length: 16 }, () => pool.connect()));
    try {
      await Promise.all(
        clients.map(async (client, i) => {
          await client.query("begin");
          for (let n = 0; n < 5; n++)
            await client.query("select steward.record_job_stats($1::jsonb)", [batch((i + n) % 2 === 1)]);
          await client.query("commit");
        }),
      );
    } finally {
      clients.forEach((client) => client.release());
    }
    const { rows } = await pool.query(
      "select count(*)::int as rows, sum(completed)::int as completed, sum(retried)::int as retried, sum(failed)::int as failed, sum(total_ms)::int as ms from steward.job_stat_counts",
    );
    expect(rows[0]).toEqual({
      rows: 8,
      completed: 8 * 16 * 5 * 2,
      retried: 8 * 16 * 5,
      failed: 8 * 16 * 5,
      ms: 8 * 16 * 5 * 10,
    });
    const { rows: histogram } = await pool.query(
      "select bucket, sum(attempts)::int as n from steward.job_stat_durations group by 1 order by 1",
    );
    expect(histogram).toEqual([
      { bucket: 0, n: 8 * 16 * 5 * 3 },
      { bucket: 8, n: 8 * 16 * 5 },
    ]);
  });

  it("estimates durations within 9 % from the histogram", async () => {
    const values = [0.02, 0.9, 1, 1.5, 7, 42, 100, 999, 12_345, 3_600_000];
    const { rows } = await context.db.pool.query(
      "select v, round(power(2, (b + 0.5) / 4.0)::numeric, 6)::float8 as estimate from unnest($1::float8[], $2::int[]) as t(v, b)",
      [values, values.map(durationBucket)],
    );
    for (const { v, estimate } of rows) {
      expect(estimate / v).toBeGreaterThan(1 / 1.0906);
      expect(estimate / v).toBeLessThan(1.0906);
    }
  });

  it("cleans up statistics past their retention in bounded batches", async () => {
    const { pool } = context.db;
    await pool.query("truncate steward.job_stat_counts, steward.job_stat_durations");
    await pool.query(`
      insert into steward.job_stat_counts (task, day, completed)
      select 'test_old', current_date - 500 - i, 1 from generate_series(1, 5) i
      union all select 'test_new', current_date, 1`);
    const deleted: number[] = [];
    for (;;) {
      const { rows } = await pool.query("select steward.cleanup_job_stats(2) as n");
      deleted.push(Number(rows[0].n));
      if (Number(rows[0].n) < 2) break;
    }
    expect(deleted).toEqual([2, 2, 1]);
    expect((await pool.query("select task from steward.job_stat_counts")).rows).toEqual([{ task: "test_new" }]);
  });

  it("cleans up exactly the days before the retention began (UTC), in both tables, in any session time zone", async () => {
    const { pool } = context.db;
    await pool.query("truncate steward.job_stat_counts, steward.job_stat_durations");
    const { rows: registered } = await pool.query(
      "select function::text from steward.cleanup_steps where name = 'job_stats'",
    );
    expect(registered).toEqual([{ function: "steward.cleanup_job_stats(integer)" }]);
    // The first day kept is today (UTC) minus job_stats.retention (400 days); the day before goes.
    await pool.query(`
      insert into steward.job_stat_counts (task, day, completed)
      select 'test_edge', (now() at time zone 'UTC')::date - d, 1 from unnest(array[401, 400, 0]) d;
      insert into steward.job_stat_durations (task, day, bucket, attempts)
      select 'test_edge', (now() at time zone 'UTC')::date - d, b, 1 from unnest(array[401, 400]) d, generate_series(0, 2) b;`);
    const client = await pool.connect();
    try {
      // Far from UTC either way: the day boundary must not move with the session's time zone.
      for (const zone of ["Pacific/Kiritimati", "Pacific/Pago_Pago"]) {
        await client.query(`set time zone '${zone}'`);
        const { rows } = await client.query("select steward.run_cleanup_step('job_stats', 100) as n");
        expect(Number(rows[0].n), zone).toBe(zone === "Pacific/Kiritimati" ? 3 : 0);
      }
    } finally {
      await client.query("reset time zone");
      client.release();
    }
    const { rows } = await pool.query(`
      select (select array_agg((now() at time zone 'UTC')::date - day order by day) from steward.job_stat_counts) as counts,
             (select array_agg(distinct (now() at time zone 'UTC')::date - day) from steward.job_stat_durations) as durations`);
    expect(rows[0]).toEqual({ counts: [400, 0], durations: [400] });
  });
});
