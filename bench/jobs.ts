// `jobs`: no-op job throughput of `steward worker` (its task wrapper, the dead-letter trigger,
// statistics, heartbeat) against plain graphile-worker in the same configuration, in the same
// database. The baseline runs on a second graphile-worker schema, which has no trigger.
import { run, runMigrations, type Runner } from "graphile-worker";
import { loadConfig, type Config } from "../src/config.ts";
import { createPool } from "../src/database.ts";
import { createLogger, graphileLogger } from "../src/logger.ts";
import { defineTask } from "../src/worker/task.ts";
import { startWorker } from "../src/worker/runner.ts";
import { defineScenario, type BenchContext, type Measurement } from "./scenario.ts";

const BASELINE_SCHEMA = "graphile_worker_baseline";
const TASK = "bench_noop";

interface State {
  config: Config;
  jobs: number;
}

/** A started worker of either kind. */
interface Running {
  onSuccess(listener: () => void): void;
  stop(): Promise<void>;
}

const silent = createLogger("silent", { pretty: false });

async function startOurs(context: BenchContext, config: Config): Promise<Running> {
  const noop = defineTask({ identifier: TASK, description: "does nothing", parse: () => ({}), run: async () => {} });
  const worker = await startWorker({
    url: context.url,
    config,
    logger: silent,
    tasks: [noop],
    schedules: [],
    health: false,
  });
  return {
    onSuccess: (listener) => worker.events.on("job:success", listener),
    stop: () => worker.stop("bench round over"),
  };
}

async function startBaseline(context: BenchContext, config: Config): Promise<Running> {
  const pool = createPool(context.url, { max: config.concurrency + 4, applicationName: "steward bench baseline" });
  const runner: Runner = await run({
    pgPool: pool,
    concurrency: config.concurrency,
    taskList: { [TASK]: async () => {} },
    noHandleSignals: true,
    logger: graphileLogger(silent),
    preset: {
      worker: {
        schema: BASELINE_SCHEMA,
        // The local queue as startWorker sets it up.
        ...(config.localQueueSize > 1 ? { localQueue: { size: config.localQueueSize, ttl: 60_000 } } : {}),
        completeJobBatchDelay: config.completeBatchDelayMs,
        failJobBatchDelay: config.completeBatchDelayMs,
      },
    },
  });
  return {
    onSuccess: (listener) => runner.events.on("job:success", listener),
    async stop() {
      await runner.stop();
      await pool.end();
    },
  };
}

/**
 * Queues `jobs` no-op jobs, starts a worker, and times it from its 5 %th job to the moment the
 * table is empty (completions are committed in batches). The clock starts after start-up
 * (connections, LISTEN, steward's first heartbeat), a one-time cost that is not throughput;
 * queueing before the start means neither side depends on hearing the jobs:insert notification.
 */
async function measure(
  context: BenchContext,
  schema: string,
  jobs: number,
  start: () => Promise<Running>,
): Promise<Measurement> {
  const { pool } = context;
  // Each round starts from a clean table, so the dead rows of earlier rounds favour neither side.
  await pool.query(`vacuum ${schema}._private_jobs`);
  await pool.query(
    `select count(*) from ${schema}.add_jobs(array(
       select row($1::text, '{}'::json, null, null, null, null, null, null)::${schema}.job_spec
         from generate_series(1, $2)))`,
    [TASK, jobs],
  );
  // Fresh statistics on both tables: get-jobs plans flip with them (3x slower on stale ones),
  // which would measure autovacuum's timing rather than either worker.
  await pool.query(`analyze ${schema}._private_jobs`);
  const skipped = Math.floor(jobs / 20);
  let succeeded = 0;
  let began = 0;
  const worker = await start();
  try {
    // In time: graphile-worker's run() returns before any job's first query can come back.
    worker.onSuccess(() => {
      if (++succeeded === skipped) began = performance.now();
    });
    for (;;) {
      const { rows } = await pool.query(`select not exists (select from ${schema}._private_jobs) as empty`);
      if (rows[0].empty && began) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const seconds = (performance.now() - began) / 1000;
    return {
      value: (jobs - skipped) / seconds,
      detail: { jobs, timed: jobs - skipped, seconds: Number(seconds.toFixed(3)) },
    };
  } finally {
    await worker.stop();
  }
}

export const jobsScenario = defineScenario<State>({
  name: "jobs",
  unit: "jobs/s",
  higherIsBetter: true,
  description:
    "no-op jobs through `steward worker` (dead-letter trigger, statistics, heartbeat) vs plain graphile-worker, same configuration",
  async setup(context) {
    const config = { ...loadConfig(), healthPort: 0 };
    await runMigrations({
      connectionString: context.url,
      logger: graphileLogger(silent),
      preset: { worker: { schema: BASELINE_SCHEMA } },
    });
    context.logger.info(
      {
        concurrency: config.concurrency,
        localQueueSize: config.localQueueSize,
        completeBatchDelayMs: config.completeBatchDelayMs,
      },
      "jobs: the worker configuration both sides use (STEWARD_CONCURRENCY, STEWARD_LOCAL_QUEUE_SIZE, STEWARD_COMPLETE_BATCH_DELAY_MS)",
    );
    // The rounds vacuum and analyze both job tables themselves: autovacuum waking up on one
    // side's dead rows during the other side's round would only add noise.
    for (const schema of ["graphile_worker", BASELINE_SCHEMA]) {
      await context.pool.query(`alter table ${schema}._private_jobs set (autovacuum_enabled = false)`);
    }
    const state = { config, jobs: context.quick ? 8000 : 30_000 };
    // Warm both code paths (JIT, prepared plans) before anything is measured.
    await measure(context, "graphile_worker", 500, () => startOurs(context, config));
    await measure(context, BASELINE_SCHEMA, 500, () => startBaseline(context, config));
    return state;
  },
  ours: (state, context) => measure(context, "graphile_worker", state.jobs, () => startOurs(context, state.config)),
  baseline: (state, context) =>
    measure(context, BASELINE_SCHEMA, state.jobs, () => startBaseline(context, state.config)),
  async teardown(_state, context) {
    await context.pool.query(`drop schema if exists ${BASELINE_SCHEMA} cascade`);
  },
});
