// The health-metrics example: its confidence formula on hand-computed cases, its install (run on
// every start), its webhook path, and `steward start` keeping it busy.
import { spawn } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installHealthMetrics, seedHealthMetrics } from "../examples/health-metrics/index.ts";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { readRun, startRecalculation } from "../src/worker/recalculation.ts";
import { recalculate } from "../tasks/recalculate.ts";
import { recalculateBatch } from "../tasks/recalculate_batch.ts";
import { createTestDatabase, eventually, freePort, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

beforeAll(async () => {
  await installHealthMetrics(context.db.pool);
});

async function scalar<T>(sql: string, values: unknown[] = []): Promise<T> {
  const { rows } = await context.db.pool.query(sql, values);
  return Object.values(rows[0] as object)[0] as T;
}

describe("the confidence formula", () => {
  const close = (sql: string, expected: number) =>
    it(`${sql} = ${expected}`, async () => {
      expect(Number(await scalar(`select ${sql}`))).toBeCloseTo(expected, 6);
    });

  // completeness = min(1, days with a sample / expected days)
  close("health_metrics.completeness(5, 7)", 5 / 7);
  close("health_metrics.completeness(9, 7)", 1);
  close("health_metrics.completeness(1, 2)", 0.5);
  close("health_metrics.completeness(0, 7)", 0);
  // freshness = 0.5 ^ (age / half_life)
  close("health_metrics.freshness('12 hours', '12 hours')", 0.5);
  close("health_metrics.freshness('36 hours', '12 hours')", 0.125);
  close("health_metrics.freshness('6 hours', '1 day')", 0.8408964);
  close("health_metrics.freshness('0', '1 day')", 1);
  close("health_metrics.freshness('-1 hour', '1 day')", 1);
  // agreement = max(0, 1 - (max - min) / |mean| / tolerance); 1 with fewer than two values
  close("health_metrics.agreement(array[70], 0.15)", 1);
  close("health_metrics.agreement(array[]::numeric[], 0.15)", 1);
  close("health_metrics.agreement(array[60, 60, 60], 0.1)", 1);
  close("health_metrics.agreement(array[70, 77], 0.15)", 1 - 7 / 73.5 / 0.15);
  close("health_metrics.agreement(array[100, 50, 75], 0.2)", 0);
  close("health_metrics.agreement(array[-1, 1], 0.1)", 0);
  // confidence = completeness × freshness × agreement, to 4 decimals
  close("health_metrics.confidence(0.5, 0.5, 0.5)", 0.125);
  close("health_metrics.confidence(0.7142857, 0.5, 0.3650794)", 0.1304);

  it("scores a hand-built user's metrics as of a fixed moment", async () => {
    const { pool } = context.db;
    const asOf = "2025-01-08T12:00:00Z";
    // Offsets in hours before asOf; negative is after it.
    const samples: Array<[number, string, string, number, number]> = [
      [900001, "heart_rate", "apple_health", 70, 12], // day slot 0, the latest
      [900001, "heart_rate", "apple_health", 68, 30], // slot 1
      [900001, "heart_rate", "apple_health", 71, 54], // slot 2
      [900001, "heart_rate", "garmin", 77, 20], // slot 0: garmin's latest
      [900001, "heart_rate", "garmin", 75, 80], // slot 3
      [900001, "heart_rate", "garmin", 74, 100], // slot 4
      [900001, "heart_rate", "garmin", 60, 8 * 24], // before the 7-day window
      [900001, "heart_rate", "apple_health", 99, -1], // after asOf: not seen
      [900001, "weight", "withings", 80, 84], // slot 3, 3.5 days old
      [900002, "sleep_minutes", "oura", 400, 10 * 24], // only outside the window
    ];
    await pool.query(
      `insert into health_metrics.samples (user_id, metric, provider, value, measured_at)
       select u, m, p, v, $1::timestamptz - make_interval(hours => h)
         from unnest($2::bigint[], $3::text[], $4::text[], $5::numeric[], $6::int[]) as s(u, m, p, v, h)`,
      [asOf, ...[0, 1, 2, 3, 4].map((i) => samples.map((s) => s[i]))],
    );
    const keys = [
      { user_id: 900001, metric: "heart_rate" },
      { user_id: 900001, metric: "weight" },
      { user_id: 900001, metric: "steps" },
      { user_id: 900002, metric: "sleep_minutes" },
    ];
    const { rows } = await pool.query(
      `select user_id::int, metric, samples, days_with_samples as days, providers,
              completeness::float8, freshness::float8, agreement::float8, confidence::float8
         from health_metrics.confidence_of($1::jsonb, $2) order by user_id, metric`,
      [JSON.stringify(keys), asOf],
    );
    expect(rows).toEqual([
      // 5 of 7 days; 12 h old with a 12 h half-life; apple 70 vs garmin 77 with tolerance 0.15.
      {
        user_id: 900001,
        metric: "heart_rate",
        samples: 6,
        days: 5,
        providers: 2,
        completeness: 0.7143,
        freshness: 0.5,
        agreement: 0.3651,
        confidence: 0.1304,
      },
      // 1 of 2 expected days; 3.5 days old with a 7-day half-life; one provider.
      {
        user_id: 900001,
        metric: "weight",
        samples: 1,
        days: 1,
        providers: 1,
        completeness: 0.5,
        freshness: 0.7071,
        agreement: 1,
        confidence: 0.3536,
      },
      // Nothing in the window: 0, though the last sample (10 days, half-life 1 day) still counts for freshness.
      {
        user_id: 900002,
        metric: "sleep_minutes",
        samples: 0,
        days: 0,
        providers: 0,
        completeness: 0,
        freshness: 0.001,
        agreement: 1,
        confidence: 0,
      },
    ]);
  });
});

describe("the health-metrics schema", () => {
  it("installs again without changing anything, and without re-registering what is registered", async () => {
    const { pool } = context.db;
    // The view's registration (once the registry exists) is asserted on every start; the rest
    // is registered only when it changes.
    const state = () =>
      pool.query(`select (select count(*) from steward.audit_log where action <> 'register_materialized_view') as audits,
                         (select count(*) from pg_class where relnamespace = 'health_metrics'::regnamespace) as relations,
                         (select tags from steward.tracked_tables where target = 'health_metrics.samples'::regclass) as tags,
                         (select batch_size from steward.recalculations where name = 'metric_confidence') as batch_size`);
    const before = (await state()).rows[0];
    await installHealthMetrics(pool);
    await installHealthMetrics(pool);
    expect((await state()).rows[0]).toEqual(before);
    expect(before.tags).toContain("health:user:{user_id}");
    expect(before.batch_size).toBe(500);
  });

  it("ingests a webhook into samples once, enqueuing the user's cache tag", async () => {
    const { pool } = context.db;
    const body = {
      user_id: 700001,
      samples: [
        { metric: "steps", value: 9120, measured_at: "2025-03-01T23:00:00Z" },
        { metric: "heart_rate", value: 64, measured_at: "2025-03-01T22:55:00Z" },
        { metric: "mood", value: 3, measured_at: "2025-03-01T22:55:00Z" },
      ],
    };
    expect(await scalar("select health_metrics.ingest_webhook('fitbit', $1)", [body])).toBe(2);
    // The provider resends it: nothing new, but the delivery is kept.
    expect(await scalar("select health_metrics.ingest_webhook('fitbit', $1)", [body])).toBe(0);
    expect(
      await scalar("select count(*)::int from health_metrics.webhook_events where body->>'user_id' = '700001'"),
    ).toBe(2);
    expect(await scalar("select count(*)::int from steward.invalidations where tag = 'health:user:700001'")).toBe(1);
    await expect(
      pool.query("select health_metrics.ingest_webhook('fitbit', '{\"samples\": []}')"),
    ).rejects.toMatchObject({
      code: "22023",
    });
  });

  it("generates history once, and the reference recalculation scores every key exactly as confidence_of does", async () => {
    const { pool } = context.db;
    await pool.query("delete from health_metrics.samples");
    const samples = await seedHealthMetrics(pool, 300);
    expect(samples).toBeGreaterThan(10_000);
    expect(await seedHealthMetrics(pool, 300)).toBe(0);
    expect(await scalar("select count(distinct user_id)::int from health_metrics.samples")).toBe(300);
    const keys = await scalar<number>(
      "select count(*)::int from (select distinct user_id, metric from health_metrics.samples) k",
    );
    expect(await scalar("select count(*)::int from health_metrics.latest_unified_metrics")).toBe(keys);

    const worker = await startTestWorker(context.db, { tasks: [recalculate, recalculateBatch] });
    try {
      const { run } = await startRecalculation(pool, "metric_confidence");
      expect(run.keysTotal).toBe(keys);
      const ended = await eventually(
        async () => {
          const current = await readRun(pool, run.id);
          return current?.status !== "running" && current;
        },
        { timeoutMs: 60_000, what: "the confidence run" },
      );
      expect(ended).toMatchObject({ status: "completed", keysDone: keys });
    } finally {
      await worker.stop();
    }
    expect(await scalar("select count(*)::int from health_metrics.metric_confidence_cache")).toBe(keys);
    // Each cached score is what confidence_of gives for that key at the moment it was computed
    // (one batch, one moment: its transaction's).
    const mismatches = await scalar<number>(`
      with batches as (
        select computed_at, jsonb_agg(jsonb_build_object('user_id', user_id, 'metric', metric)) as keys
          from health_metrics.metric_confidence_cache group by computed_at
      ), expected as (
        select x.* from batches b cross join lateral health_metrics.confidence_of(b.keys, b.computed_at) as x
      )
      select count(*)::int from health_metrics.metric_confidence_cache c
        full join expected x on x.user_id = c.user_id and x.metric = c.metric
       where (x.confidence, x.completeness, x.freshness, x.agreement, x.providers, x.samples)
             is distinct from (c.confidence, c.completeness, c.freshness, c.agreement, c.providers, c.samples)`);
    expect(mismatches).toBe(0);
    expect(
      await scalar("select count(*)::int from health_metrics.metric_confidence_cache where confidence > 0"),
    ).toBeGreaterThan(keys / 2);
  }, 120_000);
});

describe("steward start with STEWARD_EXAMPLE=health-metrics", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  afterAll(async () => {
    await db?.drop();
  });

  it("installs the example, generates data and shows the worker recalculating it on /metrics; again on restart without regenerating", async () => {
    db = await createTestDatabase();
    const healthPort = await freePort();
    const start = () => {
      const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, "bin", "steward.js"), "start"], {
        env: {
          ...process.env,
          DATABASE_URL: db!.url,
          STEWARD_EXAMPLE: "health-metrics",
          STEWARD_EXAMPLE_USERS: "400",
          STEWARD_HEALTH_PORT: String(healthPort),
          LOG_LEVEL: "info",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      child.stdout.on("data", (chunk) => (output += chunk));
      child.stderr.on("data", (chunk) => (output += chunk));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      return { child, exited, output: () => output };
    };
    const metrics = async () => {
      try {
        return await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
      } catch {
        return "";
      }
    };

    const first = start();
    const text = await eventually(
      async () => {
        const body = await metrics();
        return body.includes('steward_recalc_last_run_seconds{name="metric_confidence",status="completed"}') && body;
      },
      { timeoutMs: 90_000, intervalMs: 500, what: "a completed metric_confidence run on /metrics" },
    ).catch((error: Error) => {
      throw new Error(`${error.message}; steward start printed:\n${first.output()}`);
    });
    expect(text).toMatch(/steward_jobs_total\{task="recalculate_batch",outcome="completed"\} \d+/);
    expect(first.output()).toContain("health-metrics example installed");
    expect(first.output()).toContain("generated synthetic samples");
    // The run's summary is logged after the batch that completed it commits, which /metrics may
    // already have shown.
    await eventually(async () => /run \d+ of metric_confidence completed: [\d,]+ of [\d,]+ keys/.test(first.output()), {
      what: "the run's summary in the log",
    }).catch((error: Error) => {
      throw new Error(`${error.message}; steward start printed:\n${first.output()}`);
    });
    // The live traffic arrives through the webhook path.
    await eventually(
      async () =>
        Number(
          await db!.pool.query("select count(*) from health_metrics.webhook_events").then((r) => r.rows[0].count),
        ) > 0,
      {
        timeoutMs: 30_000,
        what: "webhook traffic",
      },
    );
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    const second = start();
    await eventually(async () => (await metrics()).includes("steward_jobs_total"), {
      timeoutMs: 60_000,
      what: "the restart",
    });
    second.child.kill("SIGTERM");
    expect(await second.exited).toBe(0);
    expect(second.output()).toContain("health-metrics example installed");
    expect(second.output()).not.toContain("generated synthetic samples");
  }, 240_000);
});
