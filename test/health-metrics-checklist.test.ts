// The health-metrics checklist's own queries, as its operators type them, against the example:
// unqualified names (health_metrics on the database's search_path), the dead letters of the
// example's jobs, the admin_trainer policies for an admin, a trainer and an unrelated role, and
// the signed webhook-terra path.
import { createHmac } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installHealthMetrics, seedHealthMetrics } from "../examples/health-metrics/index.ts";
import { readRun, startRecalculation } from "../src/worker/recalculation.ts";
import { recalculate } from "../tasks/recalculate.ts";
import { recalculateBatch } from "../tasks/recalculate_batch.ts";
import { asRole, createTestRole, eventually, startTestWorker, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

/** A new session, as an operator's psql would be: it reads the database's search_path. */
async function asOperator<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: context.db.url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  await installHealthMetrics(context.db.pool);
  await installHealthMetrics(context.db.pool);
  await seedHealthMetrics(context.db.pool, 30);
});

describe("the checklist's queries, as written", () => {
  it("runs Recalculate All, then reads every name unqualified in a new session", async () => {
    const { pool } = context.db;
    const worker = await startTestWorker(context.db, { tasks: [recalculate, recalculateBatch] });
    try {
      const { run } = await startRecalculation(pool, "metric_confidence");
      await eventually(async () => (await readRun(pool, run.id))?.status === "completed", {
        what: "Recalculate All",
        timeoutMs: 60_000,
      });
    } finally {
      await worker.stop();
    }
    await asOperator(async (client) => {
      const latest = await client.query("select * from latest_unified_metrics limit 1");
      expect(latest.rows).toHaveLength(1);
      const cache = await client.query(
        "select user_id, metric_name, confidence_score from metric_confidence_cache limit 5",
      );
      expect(cache.rows).toHaveLength(5);
      expect(Object.keys(cache.rows[0])).toEqual(["user_id", "metric_name", "confidence_score"]);
      const stats = await client.query("select * from job_processing_stats order by date desc");
      expect(stats.fields.map((f) => f.name)).toEqual([
        "date",
        "task",
        "completed",
        "failed",
        "retried",
        "avg_ms",
        "p95_ms",
      ]);
      await eventually(
        async () =>
          (await client.query("select * from job_processing_stats where task = 'recalculate_batch'")).rows.length > 0,
        { what: "the batches in job_processing_stats" },
      );
      const cleaned = await client.query("select cleanup_rate_limits()");
      expect(Number(cleaned.rows[0].cleanup_rate_limits)).toBeGreaterThanOrEqual(0);
      expect((await client.query("select * from background_jobs_dlq")).rows).toEqual([]);
      const kind = await client.query("select relkind from pg_class where oid = 'latest_unified_metrics'::regclass");
      expect(kind.rows[0].relkind).toBe("m");
    });
  });

  it("lists in background_jobs_dlq the dead letters of the example's jobs only", async () => {
    const { pool } = context.db;
    await pool.query(`
      insert into steward.dead_letters (source, task_identifier, payload, attempts, max_attempts, last_error)
      values ('job', 'webhook-terra', '{"body": "{}"}', 5, 5, 'bad signature'),
             ('job', 'recalculate', '{"name": "metric_confidence"}', 3, 3, 'boom'),
             ('job', 'recalculate', '{"name": "someone_else"}', 3, 3, 'not ours'),
             ('job', 'send_email', '{}', 25, 25, 'not ours')`);
    const rows = await asOperator(
      async (client) =>
        (await client.query("select task_identifier, last_error from background_jobs_dlq order by id")).rows,
    );
    expect(rows).toEqual([
      { task_identifier: "webhook-terra", last_error: "bad signature" },
      { task_identifier: "recalculate", last_error: "boom" },
    ]);
  });
});

describe("the admin_trainer policies", () => {
  const roles: { name: string; drop(): Promise<void> }[] = [];
  afterAll(async () => {
    for (const role of roles) await role.drop();
  });

  it("show an admin every row, a trainer their clients' rows only, and refuse an unrelated role", async () => {
    const { pool } = context.db;
    const [admin, trainer, stranger] = await Promise.all(
      ["hm_admin", "hm_trainer", "hm_stranger"].map((prefix) => createTestRole(context.db, prefix)),
    );
    roles.push(admin!, trainer!, stranger!);
    const { rows: policies } = await pool.query(
      "select tablename from pg_policies where schemaname = 'health_metrics' and policyname like '%admin_trainer%' order by 1",
    );
    expect(policies.map((p) => p.tablename)).toEqual(["metric_confidence_cache", "samples", "webhook_events"]);
    for (const role of [admin!, trainer!, stranger!]) {
      await pool.query(`grant usage on schema health_metrics to ${role.name}`);
      await pool.query(
        `grant select on health_metrics.samples, health_metrics.metric_confidence_cache to ${role.name}`,
      );
    }
    await pool.query("insert into health_metrics.staff values ($1, 'admin'), ($2, 'trainer')", [
      admin!.name,
      trainer!.name,
    ]);
    const { rows: users } = await pool.query<{ user_id: string }>(
      "select distinct user_id from health_metrics.samples order by 1 limit 2",
    );
    await pool.query("insert into health_metrics.trainer_clients values ($1, $2), ($1, $3)", [
      trainer!.name,
      users[0]!.user_id,
      users[1]!.user_id,
    ]);
    const count = (sql: string) => async (client: pg.PoolClient) => Number((await client.query(sql)).rows[0].n);
    const all = Number((await pool.query("select count(*) as n from health_metrics.samples")).rows[0].n);
    const clients = Number(
      (
        await pool.query("select count(*) as n from health_metrics.samples where user_id = any($1)", [
          [users[0]!.user_id, users[1]!.user_id],
        ])
      ).rows[0].n,
    );
    expect(clients).toBeGreaterThan(0);
    expect(clients).toBeLessThan(all);
    expect(await asRole(context.db, admin!.name, count("select count(*) as n from health_metrics.samples"))).toBe(all);
    expect(await asRole(context.db, trainer!.name, count("select count(*) as n from health_metrics.samples"))).toBe(
      clients,
    );
    expect(
      await asRole(
        context.db,
        trainer!.name,
        count("select count(distinct user_id) as n from health_metrics.metric_confidence_cache"),
      ),
    ).toBe(2);
    await expect(
      asRole(context.db, stranger!.name, count("select count(*) as n from health_metrics.samples")),
    ).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/neither an admin nor a trainer/) });
  });
});

describe("webhook-terra", () => {
  const secret = "terra-test-secret";
  const sign = (body: string) => createHmac("sha256", secret).update(body).digest("hex");

  it("stores a signed delivery's samples, enqueues their invalidation and a recalculation of their keys", async () => {
    const { pool } = context.db;
    await pool.query(
      "insert into health_metrics.webhook_secrets values ('terra', $1) on conflict (provider) do update set secret = excluded.secret",
      [secret],
    );
    // The HMAC in SQL agrees with node's on a key longer than the block, too.
    const long = "k".repeat(100);
    const { rows: mac } = await pool.query(
      "select health_metrics.hmac_sha256(convert_to($1, 'UTF8'), convert_to('msg', 'UTF8')) as mac",
      [long],
    );
    expect(mac[0].mac).toBe(createHmac("sha256", long).update("msg").digest("hex"));

    const body = JSON.stringify({
      user_id: 777001,
      samples: [
        { metric: "steps", value: 4200, measured_at: new Date().toISOString() },
        { metric: "heart_rate", value: 61, measured_at: new Date().toISOString() },
      ],
    });
    await pool.query("delete from steward.invalidations where tag = 'health:user:777001'");
    const { rows } = await pool.query("select health_metrics.webhook_terra($1, $2) as inserted", [body, sign(body)]);
    expect(rows[0].inserted).toBe(2);
    const stored = await pool.query(
      "select metric from health_metrics.samples where user_id = 777001 and provider = 'terra' order by 1",
    );
    expect(stored.rows.map((r) => r.metric)).toEqual(["heart_rate", "steps"]);
    const queued = await pool.query(
      "select count(*)::int as n from steward.invalidations where tag = 'health:user:777001'",
    );
    expect(queued.rows[0].n).toBeGreaterThan(0);
    const jobs = await pool.query(
      `select j.payload from graphile_worker._private_jobs j
        join graphile_worker._private_tasks t on t.id = j.task_id
       where t.identifier = 'recalculate' and j.payload->>'name' = 'metric_confidence' and j.payload::jsonb ? 'keys'
       order by j.id`,
    );
    expect(jobs.rows.at(-1)!.payload.keys).toEqual(
      expect.arrayContaining([
        { user_id: 777001, metric: "steps" },
        { user_id: 777001, metric: "heart_rate" },
      ]),
    );
  });

  it("refuses a delivery whose signature does not match, storing nothing", async () => {
    const { pool } = context.db;
    const body = JSON.stringify({
      user_id: 777002,
      samples: [{ metric: "steps", value: 1, measured_at: new Date().toISOString() }],
    });
    await expect(
      pool.query("select health_metrics.webhook_terra($1, $2)", [body, sign(body + " ")]),
    ).rejects.toMatchObject({
      code: "22023",
    });
    const stored = await pool.query("select count(*)::int as n from health_metrics.samples where user_id = 777002");
    expect(stored.rows[0].n).toBe(0);
  });
});
