// The health server: /readyz and /health in the deployment checklists' shape, what makes each
// check warn or fail, what the body never says, and the connection of its own it checks on.
import { afterEach, describe, expect, it } from "vitest";
import type pg from "pg";
import { createPool } from "../src/database.ts";
import { startHealthServer } from "../src/worker/health.ts";
import { createMetrics } from "../src/worker/metrics.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { startTestWorker, testLogger, useTestDatabase, withSettings } from "./helpers.ts";

const context = useTestDatabase();
let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
  await context.db.pool.query(`
    truncate steward.dead_letters;
    delete from steward.invalidations;
    delete from steward.materialized_views;`);
});

async function ready(path = "/readyz") {
  worker ??= await startTestWorker(context.db, { tasks: [], health: true });
  const response = await fetch(`http://127.0.0.1:${worker.healthPort}${path}`);
  return { code: response.status, text: await response.clone().text(), body: await response.json() };
}

/** A dead letter that failed `ago` ago, with an error text that must never reach the body. */
async function deadLetter(pool: pg.Pool, ago = "1 minute") {
  await pool.query(
    `insert into steward.dead_letters (source, task_identifier, attempts, max_attempts, last_error, failed_at)
     values ('job', 'test_export', 3, 3, 'connect ECONNREFUSED 10.1.2.3:5432 password=hunter2', now() - $1::interval)`,
    [ago],
  );
}

describe("/readyz", () => {
  it("answers in the checklists' shape, every check ok, and /health answers the same", async () => {
    const { code, body } = await ready();
    expect(code).toBe(200);
    expect(Object.keys(body)).toEqual(["status", "timestamp", "checks", "details"]);
    expect(body.status).toBe("healthy");
    expect(Date.parse(body.timestamp)).toBeGreaterThan(Date.now() - 60_000);
    expect(body.checks).toEqual({
      database: "ok",
      migrations: "ok",
      jobWorker: "ok",
      deadLetters: "ok",
      invalidations: "ok",
      views: "ok",
    });
    expect(body.details).toMatchObject({
      database: { latencyMs: expect.any(Number) },
      migrations: { steward: expect.stringMatching(/^\d{6}\.sql$/), graphileWorker: expect.any(Number) },
      deadLetters: { recent: 0, notReplayed: 0, windowSeconds: 3600 },
      invalidations: { pending: 0, oldestAgeSeconds: 0 },
      views: { registered: 0 },
    });
    const alias = await ready("/health");
    expect(alias.code).toBe(200);
    expect(alias.body.checks).toEqual(body.checks);
    expect((await fetch(`http://127.0.0.1:${worker!.healthPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${worker!.healthPort}/nope`)).status).toBe(404);
  });

  it("is degraded, still 200, while dead letters arrive, naming no error text", async () => {
    await deadLetter(context.db.pool);
    await deadLetter(context.db.pool, "2 hours");
    const { code, text, body } = await ready();
    expect(code).toBe(200);
    expect(body.status).toBe("degraded");
    expect(body.checks.deadLetters).toBe("warn");
    expect(body.details.deadLetters).toEqual({ recent: 1, notReplayed: 2, windowSeconds: 3600 });
    expect(text).not.toMatch(/ECONNREFUSED|10\.1\.2\.3|hunter2|test_export/);
  });

  it("counts only dead letters inside health.dead_letters_window, and warns from health.dead_letters_warn", async () => {
    await deadLetter(context.db.pool, "2 hours");
    expect((await ready()).body.checks.deadLetters).toBe("ok");
    await withSettings(
      context.db.pool,
      { "health.dead_letters_window": "1 day", "health.dead_letters_warn": "2" },
      async () => {
        expect((await ready()).body.checks.deadLetters).toBe("ok");
        await deadLetter(context.db.pool, "3 hours");
        expect((await ready()).body.checks.deadLetters).toBe("warn");
      },
    );
  });

  it("fails, 503 unhealthy, only past a fail threshold the team set", async () => {
    await deadLetter(context.db.pool);
    await withSettings(context.db.pool, { "health.dead_letters_fail": "1" }, async () => {
      const { code, body } = await ready();
      expect(code).toBe(503);
      expect(body.status).toBe("unhealthy");
      expect(body.checks).toMatchObject({ database: "ok", deadLetters: "fail" });
    });
    expect((await ready()).code).toBe(200);
  });

  it("warns when the oldest undelivered invalidation is older than health.invalidation_age_warn", async () => {
    // Debounced into the future, so no drainer delivers it during the test.
    await context.db.pool.query(
      "insert into steward.invalidations (tag, enqueued_at, deliver_at) values ('health:test', now() - interval '10 minutes', now() + interval '1 hour')",
    );
    const { body } = await ready();
    expect(body.checks.invalidations).toBe("warn");
    expect(body.details.invalidations).toEqual({ pending: 1, oldestAgeSeconds: expect.closeTo(600, -1) });
    await withSettings(context.db.pool, { "health.invalidation_age_warn": "1 hour" }, async () => {
      expect((await ready()).body.checks.invalidations).toBe("ok");
    });
    await withSettings(context.db.pool, { "health.invalidation_age_fail": "5 minutes" }, async () => {
      expect((await ready()).body).toMatchObject({ status: "unhealthy", checks: { invalidations: "fail" } });
    });
  });

  it("warns about a view staler than health.view_staleness_warn times its interval, a missing one, a failed refresh", async () => {
    const { pool } = context.db;
    await pool.query(`
      create materialized view health_fresh as select 1 as id;
      create unique index on health_fresh (id);
      create materialized view health_stale as select 1 as id;
      create unique index on health_stale (id);
      select steward.register_materialized_view('health_fresh', refresh_every => '1 hour');
      select steward.register_materialized_view('health_stale', refresh_every => '10 minutes');
      update steward.materialized_views set last_refreshed_at = now() - interval '15 minutes';`);
    try {
      // 15 minutes against 10: not yet twice the interval.
      expect((await ready()).body.checks.views).toBe("ok");
      await pool.query(
        "update steward.materialized_views set last_refreshed_at = now() - interval '25 minutes' where view = 'public.health_stale'",
      );
      let { body } = await ready();
      expect(body.checks.views).toBe("warn");
      expect(body.details.views).toEqual({ registered: 2, stale: ["public.health_stale"] });
      await withSettings(pool, { "health.view_staleness_fail": "2" }, async () => {
        expect((await ready()).code).toBe(503);
      });
      await pool.query("drop materialized view health_stale");
      ({ body } = await ready());
      expect(body.details.views).toMatchObject({ missing: ["public.health_stale"] });
    } finally {
      await pool.query("drop materialized view if exists health_fresh, health_stale");
    }
  });

  it("is unhealthy when migrations are behind, with no error text", async () => {
    const { pool } = context.db;
    const { rows } = await pool.query(
      "delete from graphile_migrate.migrations where filename = (select max(filename) from graphile_migrate.migrations) returning *",
    );
    try {
      const { code, text, body } = await ready();
      expect(code).toBe(503);
      expect(body.status).toBe("unhealthy");
      expect(body.checks).toMatchObject({ database: "ok", migrations: "fail" });
      expect(body.details.migrations.steward).not.toBe(body.details.migrations.expectedSteward);
      expect(text).not.toContain("error");
    } finally {
      await pool.query(
        "insert into graphile_migrate.migrations (filename, hash, previous_hash, date) values ($1, $2, $3, $4)",
        [rows[0].filename, rows[0].hash, rows[0].previous_hash, rows[0].date],
      );
    }
  });

  it("is unhealthy when the database does not answer, naming no address, and when the worker stops", async () => {
    const pool = createPool("postgres://nobody:secret@127.0.0.1:1/none");
    let running = true;
    const server = await startHealthServer({
      port: 0,
      host: "127.0.0.1",
      pool,
      metrics: createMetrics({ pool: null, logger: testLogger() }),
      logger: testLogger(),
      isRunning: () => running,
    });
    try {
      let response = await fetch(`http://127.0.0.1:${server.port}/readyz`);
      expect(response.status).toBe(503);
      const text = await response.text();
      expect(JSON.parse(text)).toMatchObject({
        status: "unhealthy",
        checks: { database: "fail", migrations: "fail", jobWorker: "ok", deadLetters: "fail" },
      });
      expect(text).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|nobody|secret/);
      running = false;
      response = await fetch(`http://127.0.0.1:${server.port}/readyz`);
      expect((await response.json()).checks.jobWorker).toBe("fail");
    } finally {
      await server.close();
      await pool.end();
    }
  });

  it("answers from a connection of its own while every connection of the job pool is taken", async () => {
    worker = await startTestWorker(context.db, { tasks: [], health: true, config: { concurrency: 1 } });
    const held: pg.PoolClient[] = [];
    try {
      // Take every connection of the job pool that graphile-worker does not hold itself.
      const { max } = (worker.pool as unknown as { options: { max: number } }).options;
      while (worker.pool.totalCount < max || worker.pool.idleCount > 0) held.push(await worker.pool.connect());
      expect(worker.pool.idleCount).toBe(0);
      const began = performance.now();
      const { code, body } = await ready();
      expect(code).toBe(200);
      expect(body.status).toBe("healthy");
      expect(performance.now() - began).toBeLessThan(2000);
    } finally {
      for (const client of held) client.release();
    }
  });
});
