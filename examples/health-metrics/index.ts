// The health-metrics example as `npm start` offers it: install the schema (idempotent, every
// start), generate synthetic history once, then keep a little live traffic going so the worker
// has real work: webhooks every few seconds (tracked writes: drains and view refreshes) and a
// confidence recalculation for everyone every minute.
import fs from "node:fs/promises";
import path from "node:path";
import type pg from "pg";
import type { Config } from "../../src/config.ts";
import { createPool } from "../../src/database.ts";
import type { Logger } from "../../src/logger.ts";
import { PACKAGE_ROOT } from "../../src/package-root.ts";

// From the package root: the compiled runner (dist/examples/…) reads the same file.
const SCHEMA_FILE = path.join(PACKAGE_ROOT, "examples", "health-metrics", "schema.sql");
/**
 * The example's schedules (Recalculate All, the weekly vacuum), in graphile-worker's crontab
 * syntax: `steward start` runs them when no crontab of the team's is configured, and
 * `STEWARD_CRONTAB=examples/health-metrics/crontab steward worker` runs them under a worker.
 */
export const EXAMPLE_CRONTAB = path.join(PACKAGE_ROOT, "examples", "health-metrics", "crontab");
const RECALCULATION = "metric_confidence";

/** Installs (or updates) the example schema and its registrations. Safe to run on every start. */
export async function installHealthMetrics(pool: pg.Pool): Promise<void> {
  const sql = await fs.readFile(SCHEMA_FILE, "utf8");
  // One simple-protocol query: the whole file runs in one transaction.
  await pool.query(sql);
}

/** Removes the example and what it registered with steward; false when it was not installed. */
export async function removeHealthMetrics(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query<{ present: boolean }>(
    "select pg_catalog.to_regprocedure('health_metrics.remove()') is not null as present",
  );
  if (!rows[0]!.present) return false;
  await pool.query("select health_metrics.remove()");
  return true;
}

/** Generates synthetic history for `users` users unless there are samples already; returns how many it made. */
export async function seedHealthMetrics(pool: pg.Pool, users: number): Promise<number> {
  const { rows } = await pool.query<{ present: boolean }>(
    "select exists (select from health_metrics.samples) as present",
  );
  if (rows[0]!.present) return 0;
  const { rows: generated } = await pool.query<{ samples: string }>("select health_metrics.generate($1) as samples", [
    users,
  ]);
  return Number(generated[0]!.samples);
}

/** Asks the worker for a confidence recalculation of every key (joined if one is running). */
async function requestRecalculation(pool: pg.Pool): Promise<void> {
  await pool.query("select graphile_worker.add_job('recalculate', json_build_object('name', $1::text))", [
    RECALCULATION,
  ]);
}

export interface ExampleOptions {
  users: number;
  /** How often a handful of webhooks arrive. */
  trafficEveryMs: number;
  /** Webhook deliveries per tick. */
  eventsPerTick: number;
  /** How often the traffic sent since the last report is logged. */
  reportEveryMs: number;
}

const DEFAULT_OPTIONS: Omit<ExampleOptions, "users"> = {
  trafficEveryMs: 5_000,
  eventsPerTick: 20,
  reportEveryMs: 60_000,
};

export interface RunningExample {
  stop(): Promise<void>;
}

/** Installs, seeds, and starts the live traffic; `stop()` ends the traffic and closes its pool. */
async function startHealthMetrics(url: string, parentLogger: Logger, options: ExampleOptions): Promise<RunningExample> {
  const logger = parentLogger.child({ component: "example", example: "health-metrics" });
  const pool = createPool(url, { max: 2, applicationName: "steward example", actor: "example:health-metrics" });
  try {
    const began = Date.now();
    await installHealthMetrics(pool);
    logger.info({ ms: Date.now() - began }, "health-metrics example installed (schema health_metrics)");
    const seeding = Date.now();
    const samples = await seedHealthMetrics(pool, options.users);
    if (samples) {
      logger.info({ users: options.users, samples, ms: Date.now() - seeding }, "generated synthetic samples");
    }
  } catch (error) {
    await pool.end();
    throw error;
  }

  let stopped = false;
  let inFlight: Promise<unknown> = Promise.resolve();
  let trafficSamples = 0;
  let trafficEvents = 0;
  const tick = (work: () => Promise<unknown>) => {
    if (stopped) return;
    inFlight = inFlight.then(work).catch((error: unknown) => logger.warn({ err: error }, "example traffic failed"));
  };
  const sendTraffic = async () => {
    const { rows } = await pool.query<{ samples: number }>("select health_metrics.simulate_traffic($1) as samples", [
      options.eventsPerTick,
    ]);
    trafficEvents += options.eventsPerTick;
    trafficSamples += rows[0]!.samples;
  };
  const report = () => {
    logger.info({ events: trafficEvents, samples: trafficSamples }, "example webhooks received since the last report");
    trafficEvents = 0;
    trafficSamples = 0;
  };
  tick(() => requestRecalculation(pool));
  const timers = [
    setInterval(() => tick(sendTraffic), options.trafficEveryMs),
    // The recalculation after the first one runs from the example's crontab (EXAMPLE_CRONTAB),
    // as it would under `steward worker`: here only the traffic report keeps this cadence.
    setInterval(() => tick(async () => report()), options.reportEveryMs),
  ];
  logger.info(
    { webhooksEveryMs: options.trafficEveryMs, recalculation: "examples/health-metrics/crontab" },
    "example traffic running: webhooks into health_metrics.samples, and a metric_confidence recalculation for everyone",
  );

  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      timers.forEach(clearInterval);
      await inFlight;
      await pool.end().catch(() => undefined);
    },
  };
}

/**
 * What `steward start` calls: the example the configuration asks for, if any. A failure is
 * logged and the worker starts without it.
 */
export async function startExample(url: string, config: Config, logger: Logger): Promise<RunningExample | undefined> {
  if (config.example !== "health-metrics") return undefined;
  try {
    return await startHealthMetrics(url, logger, { ...DEFAULT_OPTIONS, users: config.exampleUsers });
  } catch (error) {
    logger.error(
      { err: error },
      "the health-metrics example could not be installed; running without it (STEWARD_EXAMPLE=none skips it)",
    );
    return undefined;
  }
}
