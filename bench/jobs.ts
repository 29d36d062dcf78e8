// `jobs` and `jobs_fast`: no-op job throughput of `steward worker` (its task wrapper, the
// dead-letter trigger, statistics, heartbeat) against plain graphile-worker, in the same
// database. The baseline runs on a second graphile-worker schema, which has no trigger.
// - `jobs`: both sides in the same configuration (the environment's, else steward's default).
// - `jobs_fast`: steward's default configuration against plain graphile-worker's fastest
//   (local queue, batched completion), with half of the jobs in named queues.
import { EventEmitter } from "node:events";
import { run, runMigrations, type Runner, type WorkerEvents } from "graphile-worker";
import { loadConfig, type Config } from "../src/config.ts";
import { createPool } from "../src/database.ts";
import { createLogger, graphileLogger } from "../src/logger.ts";
import { defineTask } from "../src/worker/task.ts";
import { startWorker } from "../src/worker/runner.ts";
import { defineScenario, type BenchContext, type Measurement, type Scenario } from "./scenario.ts";

const BASELINE_SCHEMA = "graphile_worker_baseline";
const TASK = "bench_noop";
/**
 * `jobs_fast` spreads its queued half over this many named queues, round robin (15 jobs each of
 * 30,000): per-entity queues, the usual reason for many jobs in named queues. With 100 queues
 * of 150 jobs, plain graphile-worker's local queue waits out its 2 s poll between a queue's
 * jobs at the end of each round (docs/operations.md, "Throughput and the local queue"), and a round takes minutes.
 */
const NAMED_QUEUES = 1000;

/** What plain graphile-worker is given: the knobs that decide its speed. */
interface BaselineSetup {
  concurrency: number;
  /** 0 or 1: no local queue. */
  localQueueSize: number;
  completeBatchDelayMs: number;
}

/** The same knobs of steward's configuration. */
function speedKnobs(config: Config): BaselineSetup {
  return {
    concurrency: config.concurrency,
    localQueueSize: config.localQueueSize,
    completeBatchDelayMs: config.completeBatchDelayMs,
  };
}

interface State {
  ours: Config;
  baseline: BaselineSetup;
  jobs: number;
}

/** A started worker of either kind. */
interface Running {
  stop(): Promise<void>;
}

const silent = createLogger("silent", { pretty: false });

async function startOurs(context: BenchContext, config: Config, events: WorkerEvents): Promise<Running> {
  const noop = defineTask({ identifier: TASK, description: "does nothing", parse: () => ({}), run: async () => {} });
  const worker = await startWorker({
    url: context.url,
    config,
    logger: silent,
    tasks: [noop],
    schedules: [],
    health: false,
    events,
  });
  return { stop: () => worker.stop("bench round over") };
}

async function startBaseline(context: BenchContext, setup: BaselineSetup, events: WorkerEvents): Promise<Running> {
  const pool = createPool(context.url, { max: setup.concurrency + 4, applicationName: "steward bench baseline" });
  const runner: Runner = await run({
    pgPool: pool,
    concurrency: setup.concurrency,
    taskList: { [TASK]: async () => {} },
    noHandleSignals: true,
    events,
    logger: graphileLogger(silent),
    preset: {
      worker: {
        schema: BASELINE_SCHEMA,
        // The local queue as startWorker sets it up.
        ...(setup.localQueueSize > 1 ? { localQueue: { size: setup.localQueueSize, ttl: 60_000 } } : {}),
        completeJobBatchDelay: setup.completeBatchDelayMs,
        failJobBatchDelay: setup.completeBatchDelayMs,
      },
    },
  });
  return {
    async stop() {
      await runner.stop();
      await pool.end();
    },
  };
}

/**
 * Queues `jobs` no-op jobs (every second one in one of `queues` named queues, when given),
 * starts a worker, and times it from its 5 %th job to the moment the table is empty
 * (completions are committed in batches). The clock starts after start-up (connections,
 * LISTEN, steward's first heartbeat), a one-time cost that is not throughput; queueing before
 * the start means neither side depends on hearing the jobs:insert notification.
 */
async function measure(
  context: BenchContext,
  schema: string,
  jobs: number,
  queues: number,
  setup: BaselineSetup,
  start: (events: WorkerEvents) => Promise<Running>,
): Promise<Measurement> {
  const { pool } = context;
  // Each round starts from clean tables, so the dead rows of earlier rounds favour neither side.
  await pool.query(`vacuum ${schema}._private_jobs, ${schema}._private_job_queues`);
  // run_at rises with n, as if the jobs had arrived one after another: fetches take jobs by
  // (priority, run_at), and with one run_at for all they would follow wherever add_jobs' join
  // happened to put the rows, at times one queue's jobs all first (see docs/operations.md, "Throughput and the local queue").
  await pool.query(
    `select count(*) from ${schema}.add_jobs(array(
       select row($1::text, '{}'::json, case when $3::int > 0 and n % 2 = 0 then 'bench_' || (n / 2 % $3::int) end,
                  now() - ($2::int - n) * interval '1 microsecond', null, null, null, null)::${schema}.job_spec
         from generate_series(1, $2::int) as n))`,
    [TASK, jobs, queues],
  );
  // Fresh statistics on both tables: get-jobs plans flip with them (3x slower on stale ones),
  // which would measure autovacuum's timing rather than either worker.
  await pool.query(`analyze ${schema}._private_jobs, ${schema}._private_job_queues`);
  const skipped = Math.floor(jobs / 20);
  let succeeded = 0;
  let began = 0;
  // Listening before the start: steward's worker runs jobs while it starts (until its first
  // heartbeat is written), so a listener added after startWorker resolves could miss so many
  // that the count never reached `skipped` and the round never ended.
  const events = new EventEmitter() as WorkerEvents;
  events.on("job:success", () => {
    if (++succeeded === skipped) began = performance.now();
  });
  const worker = await start(events);
  try {
    for (;;) {
      const { rows } = await pool.query(`select not exists (select from ${schema}._private_jobs) as empty`);
      if (rows[0].empty && began) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const seconds = (performance.now() - began) / 1000;
    return {
      value: (jobs - skipped) / seconds,
      detail: { jobs, queues, timed: jobs - skipped, seconds: Number(seconds.toFixed(3)), ...setup },
    };
  } finally {
    await worker.stop();
  }
}

/** A jobs scenario: how each side is configured and whether half the jobs use named queues. */
function jobsScenarioOf(options: {
  name: string;
  description: string;
  ours: () => Config;
  baseline: (ours: Config) => BaselineSetup;
  queues: number;
}): Scenario<State> {
  const { queues } = options;
  return defineScenario<State>({
    name: options.name,
    unit: "jobs/s",
    higherIsBetter: true,
    description: options.description,
    async setup(context) {
      const ours = { ...options.ours(), healthPort: 0 };
      const baseline = options.baseline(ours);
      await runMigrations({
        connectionString: context.url,
        logger: graphileLogger(silent),
        preset: { worker: { schema: BASELINE_SCHEMA } },
      });
      context.logger.info(
        { ours: speedKnobs(ours), baseline, namedQueues: queues },
        `${options.name}: how each side is configured`,
      );
      // The rounds vacuum and analyze both job tables themselves: autovacuum waking up on one
      // side's dead rows during the other side's round would only add noise.
      for (const schema of ["graphile_worker", BASELINE_SCHEMA]) {
        await context.pool.query(`alter table ${schema}._private_jobs set (autovacuum_enabled = false)`);
      }
      const state = { ours, baseline, jobs: context.quick ? 8000 : 30_000 };
      // Warm both code paths (JIT, prepared plans) before anything is measured.
      await measure(context, "graphile_worker", 500, queues, speedKnobs(ours), (events) =>
        startOurs(context, ours, events),
      );
      await measure(context, BASELINE_SCHEMA, 500, queues, baseline, (events) =>
        startBaseline(context, baseline, events),
      );
      return state;
    },
    ours: (state, context) =>
      measure(context, "graphile_worker", state.jobs, queues, speedKnobs(state.ours), (events) =>
        startOurs(context, state.ours, events),
      ),
    baseline: (state, context) =>
      measure(context, BASELINE_SCHEMA, state.jobs, queues, state.baseline, (events) =>
        startBaseline(context, state.baseline, events),
      ),
    async teardown(_state, context) {
      await context.pool.query(`drop schema if exists ${BASELINE_SCHEMA} cascade`);
    },
  });
}

export const jobsScenario = jobsScenarioOf({
  name: "jobs",
  description:
    "no-op jobs through `steward worker` (dead-letter trigger, statistics, heartbeat) vs plain graphile-worker, same configuration",
  ours: () => loadConfig(),
  baseline: speedKnobs,
  queues: 0,
});

/**
 * Plain graphile-worker at its fastest for `concurrency` on 2 cores: completions batched
 * within a tick, and a local queue of sixteen times the concurrency. Throughput grew with the
 * local queue up to about eight times the concurrency and no further (docs/operations.md, "Throughput and the local queue");
 * twice that leaves the baseline no batch-size handicap.
 */
export function fastestBaseline(concurrency: number): BaselineSetup {
  return { concurrency, localQueueSize: 16 * concurrency, completeBatchDelayMs: 0 };
}

export const jobsFastScenario = jobsScenarioOf({
  name: "jobs_fast",
  description: `no-op jobs, half of them in ${NAMED_QUEUES} named queues: \`steward worker\` in its default configuration vs plain graphile-worker at its fastest (local queue, batched completion)`,
  ours: () => loadConfig({}),
  baseline: (ours) => fastestBaseline(ours.concurrency),
  queues: NAMED_QUEUES,
});
