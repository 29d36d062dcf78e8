// The worker process: graphile-worker running our tasks and schedules, plus the health server.
import { EventEmitter } from "node:events";
import { run, type Runner, type TaskList, type WorkerEvents, type WorkerPool } from "graphile-worker";
import type pg from "pg";
import { loadConfig, type Config } from "../config.ts";
import { createPool } from "../database.ts";
import { startHealthServer, type HealthServer } from "./health.ts";
import { startHeartbeat, type Heartbeat } from "./heartbeats.ts";
import { InvalidationDrainer, sinksFromConfig } from "./invalidations.ts";
import { JobStats } from "./job-stats.ts";
import { createLogger, graphileLogger, type Logger } from "../logger.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { checkCrontabTasks, crontabPath, parseCrontabText, readCrontab, type CrontabEntry } from "./crontab.ts";
import { planSchedules, schedulesOf, type Schedule } from "./schedules.ts";
import { loadTasks } from "./task-files.ts";
import { buildTaskList, type OutcomeObserver, type TaskDefinition } from "./task.ts";

/** A reading of steward.metrics() (or its connection) that takes longer fails: the scrape shows no database series. */
const METRICS_STATEMENT_TIMEOUT_MS = 10_000;

export interface WorkerOptions {
  url: string;
  /** Settings; those not given are read from the environment (loadConfig). */
  config?: Partial<Config>;
  /** Defaults to JSON lines on stdout at LOG_LEVEL. */
  logger?: Logger;
  /** Defaults to the built-in tasks plus the team's task modules (STEWARD_TASKS_DIR). */
  tasks?: TaskDefinition<unknown>[];
  /** Defaults to the schedules the tasks carry; environment overrides apply either way. */
  schedules?: Schedule[];
  /** The team's crontab: its text, or lines already parsed; defaults to the STEWARD_CRONTAB file. */
  crontab?: string | CrontabEntry[];
  /** Start the HTTP server (default true). */
  health?: boolean;
  /** How often the job statistics are added to the database (default 5 s). */
  statsFlushMs?: number;
  /** Run the continuous invalidation drainer (default: config.drainer). */
  drainer?: boolean;
  /**
   * graphile-worker's event emitter to use (default: a new one, returned as `events`). Listeners
   * added before the start hear every event: jobs already run while the worker starts (its first
   * heartbeat, the drainer's LISTEN), before startWorker resolves.
   */
  events?: WorkerEvents;
}

export interface RunningWorker {
  runner: Runner;
  pool: pg.Pool;
  metrics: Metrics;
  events: WorkerEvents;
  stats: JobStats;
  heartbeat: Heartbeat;
  /** Port of the health server, if it runs. */
  healthPort: number | undefined;
  /** Graceful stop: running jobs finish within the shutdown timeout, else are released. */
  stop(reason?: string): Promise<void>;
  /** Resolves when the worker has stopped: with the error that stopped it, if one did. */
  done: Promise<Error | undefined>;
}

export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  const config: Config = { ...loadConfig(), ...options.config };
  const logger = (options.logger ?? createLogger(config.logLevel)).child({ component: "worker" });
  // Tasks and schedules first: a module or crontab line that cannot be used stops the worker
  // before it connects to anything.
  const tasks = options.tasks ?? (await loadTasks(config));
  const crontabFile = typeof options.crontab === "string" ? "crontab" : (crontabPath(config) ?? "crontab");
  const crontab =
    typeof options.crontab === "string"
      ? parseCrontabText(options.crontab, crontabFile)
      : (options.crontab ?? (await readCrontab(config)));
  checkCrontabTasks(crontab, tasks, crontabFile);
  const schedules = planSchedules(options.schedules ?? schedulesOf(tasks), crontab, crontabFile);
  const pool = createPool(options.url, {
    max: config.concurrency + 4,
    applicationName: "steward worker",
    actor: "worker",
  });
  const events: WorkerEvents = options.events ?? (new EventEmitter() as WorkerEvents);
  // runner.kill() skips the forceful shutdown once a graceful one has begun, so the pools are
  // kept here to release their running jobs ourselves when the shutdown timeout passes.
  const workerPools: WorkerPool[] = [];
  events.on("pool:create", ({ workerPool }) => workerPools.push(workerPool));
  // /metrics and /readyz each get one connection of their own: a scrape or a readiness check
  // never waits behind jobs, and a slow scrape never delays a readiness check.
  const metricsPool = createPool(options.url, {
    max: 1,
    applicationName: "steward worker metrics",
    actor: "worker",
    statementTimeoutMs: METRICS_STATEMENT_TIMEOUT_MS,
    connectionTimeoutMs: METRICS_STATEMENT_TIMEOUT_MS,
  });
  const metrics = createMetrics({ pool: metricsPool, logger, cacheMs: config.metricsCacheMs });
  const healthPool = createPool(options.url, {
    max: 1,
    applicationName: "steward worker health",
    actor: "worker",
    statementTimeoutMs: config.healthTimeoutMs,
    connectionTimeoutMs: config.healthTimeoutMs,
  });
  const closeMonitoring = async () => {
    await metricsPool.end().catch(() => undefined);
    await healthPool.end().catch(() => undefined);
  };
  // Heartbeats and statistics get connections of their own: a pool busy with long jobs must
  // not delay a heartbeat past the timeout and get its worker presumed dead.
  const housekeeping = createPool(options.url, {
    max: 2,
    applicationName: "steward worker heartbeat",
    actor: "worker",
  });
  const stats = new JobStats(housekeeping, logger);
  const observe: OutcomeObserver = (task, outcome, ms) => {
    metrics.recordJob(task, outcome, ms);
    stats.record(task, outcome, ms);
  };
  const heartbeat = startHeartbeat({
    pool: housekeeping,
    logger,
    tasks: tasks.map((task) => task.identifier),
    schedules: schedules.map(({ identifier, task, pattern, payload, source }) => ({
      identifier,
      task,
      pattern,
      payload,
      source,
    })),
  });
  // The pool id is the locked_by of its jobs: beat for it before it has run anything for long.
  // The first beats are awaited before the worker counts as started, so status, /metrics and
  // unserved_jobs() see it as soon as start resolves.
  const firstBeats: Promise<void>[] = [];
  events.on("pool:create", ({ workerPool }) => void firstBeats.push(heartbeat.add(workerPool.id)));
  const statsTimer = setInterval(() => void stats.flush(), options.statsFlushMs ?? 5000);
  statsTimer.unref();
  /** After the pools released their jobs: drop the heartbeat rows, write the last counts. */
  const closeHousekeeping = async () => {
    clearInterval(statsTimer);
    await heartbeat.stop();
    await stats.flush();
    await housekeeping.end().catch(() => undefined);
  };

  const taskList: TaskList = buildTaskList(tasks, logger, pool, config, observe);
  // Jobs locked ahead go back to the queue after a minute if this worker's slots stay busy, so
  // long jobs here do not hold them from idle workers elsewhere for graphile-worker's 5 minutes.
  const localQueue = config.localQueueSize > 1 ? { size: config.localQueueSize, ttl: 60_000 } : undefined;
  let runner: Runner;
  try {
    runner = await run({
      pgPool: pool,
      concurrency: config.concurrency,
      taskList,
      parsedCronItems: schedules.map((schedule) => schedule.item),
      noHandleSignals: true,
      events,
      logger: graphileLogger(logger),
      gracefulShutdownAbortTimeout: Math.max(0, Math.floor(config.shutdownTimeoutMs / 2)),
      preset: {
        worker: {
          ...(localQueue ? { localQueue } : {}),
          completeJobBatchDelay: config.completeBatchDelayMs,
          failJobBatchDelay: config.completeBatchDelayMs,
        },
      },
    });
  } catch (error) {
    await closeHousekeeping();
    await closeMonitoring();
    await pool.end();
    throw error;
  }
  await Promise.all(firstBeats);
  let running = true;
  logger.info(
    {
      concurrency: config.concurrency,
      localQueue: localQueue?.size ?? 0,
      completeBatchDelayMs: config.completeBatchDelayMs,
      tasks: Object.keys(taskList),
      schedules: schedules.map((s) => `${s.identifier} ${s.pattern} (${s.source})`),
    },
    "worker running",
  );

  // The invalidation queue is drained continuously (woken by NOTIFY); the drain_invalidations
  // task does the same in bounded passes, on its schedule or by hand.
  let drainer: InvalidationDrainer | undefined;
  if (config.drainer && options.drainer !== false) {
    const drainerLogger = logger.child({ component: "drainer" });
    drainer = new InvalidationDrainer({
      url: options.url,
      pool,
      sinks: sinksFromConfig(config, pool, drainerLogger),
      logger: drainerLogger,
      batchSize: config.drainBatchSize,
      visibilityMs: config.drainVisibilityMs,
      pollIntervalMs: 1000,
    });
    await drainer.start();
  }

  let health: HealthServer | undefined;
  if (options.health !== false) {
    try {
      health = await startHealthServer({
        port: config.healthPort,
        host: config.healthHost,
        pool: healthPool,
        metrics,
        logger,
        timeoutMs: config.healthTimeoutMs,
        isRunning: () => running,
      });
    } catch (error) {
      await drainer?.stop();
      await runner.stop();
      await closeHousekeeping();
      await closeMonitoring();
      await pool.end();
      throw error;
    }
  }

  let stopping: Promise<void> | undefined;
  const stop = (reason = "stop requested") => {
    stopping ??= (async () => {
      running = false;
      logger.info({ reason, timeoutMs: config.shutdownTimeoutMs }, "worker stopping");
      await drainer?.stop();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), config.shutdownTimeoutMs);
      });
      const outcome = await Promise.race([runner.stop().then(() => "stopped" as const), timedOut]).catch(
        (error: unknown) => {
          logger.error({ err: error }, "graceful shutdown failed");
          return "error" as const;
        },
      );
      clearTimeout(timer);
      if (outcome !== "stopped") {
        logger.warn("jobs did not finish in time; releasing them for another worker");
        await Promise.all(
          workerPools.map((workerPool) =>
            Promise.resolve(
              workerPool.forcefulShutdown(`worker shutdown timed out after ${config.shutdownTimeoutMs} ms`),
            ).catch((error: unknown) => logger.error({ err: error }, "forceful shutdown failed")),
          ),
        );
      }
      await closeHousekeeping();
      await health?.close();
      await closeMonitoring();
      await pool.end().catch(() => undefined);
      logger.info("worker stopped");
    })();
    return stopping;
  };

  // If graphile-worker stops on its own (fatal error), close the rest too.
  const done = runner.promise.then(
    async () => {
      await stop("worker pool exited");
      return undefined;
    },
    async (error: unknown) => {
      logger.error({ err: error }, "worker pool failed");
      await stop("worker pool failed");
      return error instanceof Error ? error : new Error(String(error));
    },
  );

  return { runner, pool, metrics, events, stats, heartbeat, healthPort: health?.port, stop, done };
}
