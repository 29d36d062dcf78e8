// Every setting pg-steward reads from the environment, in one place. docs/configuration.md
// lists the same names (test/docs.test.ts checks they agree); keep the two together.
import path from "node:path";
import { ConfigError } from "./errors.ts";
import { redactUrl } from "./worker/invalidations.ts";

export interface Config {
  /** Database to use; when absent the embedded server under `dataDir` is used. */
  databaseUrl: string | undefined;
  /** Where the embedded server keeps its data (`.steward/` in the working directory). */
  dataDir: string;
  /** Port the embedded server prefers; a free one is picked when it is taken. */
  embeddedPort: number;
  /** Health server port; 0 picks a free port. */
  healthPort: number;
  /**
   * Address the health server binds to: loopback unless told otherwise, so /metrics is not
   * open to the network by default (0.0.0.0 for Prometheus in a container).
   */
  healthHost: string;
  /** How long each step of /readyz may take before its check fails. */
  healthTimeoutMs: number;
  /** How long one reading of steward.metrics() serves /metrics scrapes. */
  metricsCacheMs: number;
  logLevel: string;
  /** Jobs run at once by one worker process. */
  concurrency: number;
  /**
   * Jobs a worker fetches in one query and keeps ready for its free slots (graphile-worker
   * localQueue); 0 or 1 turns it off. On by default (defaultLocalQueueSize): graphile-worker
   * 0.18 locks at most one job per named queue in such a batch, so named queues still run one
   * job at a time.
   */
  localQueueSize: number;
  /**
   * Milliseconds completions and failures are batched for. Never -1 (graphile-worker's
   * unbatched mode): there a completion is not awaited by shutdown and can be lost to it.
   */
  completeBatchDelayMs: number;
  /** How long a shutdown waits for running jobs before releasing them. */
  shutdownTimeoutMs: number;
  /** Where invalidation tags go: `notify` and/or `webhook`. */
  sinks: Array<"notify" | "webhook">;
  /** Channel of the notify sink. */
  notifyChannel: string;
  webhookUrl: string | undefined;
  webhookSecret: string | undefined;
  webhookTimeoutMs: number;
  /** Whether the worker drains the invalidation queue continuously (woken by NOTIFY). */
  drainer: boolean;
  drainBatchSize: number;
  drainVisibilityMs: number;
  /**
   * The example `steward start` installs and keeps busy: by default health-metrics on the
   * embedded database, none on a DATABASE_URL database unless STEWARD_EXAMPLE names it.
   */
  example: "health-metrics" | undefined;
  /** Users in the example's synthetic data. */
  exampleUsers: number;
  /**
   * STEWARD_TASKS_DIR: the team's task directories (a list separated by `:`), absolute;
   * undefined when unset: then `./tasks` is used when it exists and is not pg-steward's own.
   */
  tasksDirs: string[] | undefined;
  /** STEWARD_CRONTAB: the team's crontab, absolute; undefined when unset: then `./crontab` when it exists. */
  crontabFile: string | undefined;
}

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function sinkConfig(env: Env) {
  const webhookUrl = env.STEWARD_WEBHOOK_URL?.trim() || undefined;
  if (webhookUrl && !/^https?:\/\//.test(webhookUrl)) {
    throw new ConfigError(`STEWARD_WEBHOOK_URL must be an http(s) URL, got "${redactUrl(webhookUrl)}"`);
  }
  const defaultSinks = webhookUrl ? "notify,webhook" : "notify";
  const sinks = (env.STEWARD_SINKS?.trim() || defaultSinks)
    .split(",")
    .map((sink) => sink.trim())
    .filter(Boolean);
  for (const sink of sinks) {
    if (sink !== "notify" && sink !== "webhook") {
      throw new ConfigError(`STEWARD_SINKS takes "notify" and "webhook", got "${sink}"`);
    }
  }
  if (sinks.includes("webhook") && !webhookUrl) {
    throw new ConfigError("STEWARD_SINKS includes webhook but STEWARD_WEBHOOK_URL is not set");
  }
  const notifyChannel = env.STEWARD_NOTIFY_CHANNEL?.trim() || "steward_invalidation";
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(notifyChannel)) {
    throw new ConfigError(`STEWARD_NOTIFY_CHANNEL must be a lower-case identifier, got "${notifyChannel}"`);
  }
  const drainer = env.STEWARD_DRAINER?.trim().toLowerCase() || "on";
  if (drainer !== "on" && drainer !== "off") {
    throw new ConfigError(`STEWARD_DRAINER must be "on" or "off", got "${env.STEWARD_DRAINER}"`);
  }
  return {
    sinks: sinks as Array<"notify" | "webhook">,
    notifyChannel,
    webhookUrl,
    webhookSecret: env.STEWARD_WEBHOOK_SECRET || undefined,
    webhookTimeoutMs: integer(env, "STEWARD_WEBHOOK_TIMEOUT_MS", 5000, 100, 600000),
    drainer: drainer === "on",
    drainBatchSize: integer(env, "STEWARD_DRAIN_BATCH_SIZE", 500, 1, 10000),
    drainVisibilityMs: integer(env, "STEWARD_DRAIN_VISIBILITY_MS", 60000, 1000, 86400000),
  };
}

function exampleConfig(env: Env, databaseUrl: string | undefined) {
  const name = env.STEWARD_EXAMPLE?.trim().toLowerCase();
  if (name && name !== "none" && name !== "health-metrics") {
    throw new ConfigError(`STEWARD_EXAMPLE takes "health-metrics" or "none", got "${env.STEWARD_EXAMPLE}"`);
  }
  // Never into someone's own database unless asked by name.
  const wanted = name ? name === "health-metrics" : !databaseUrl;
  const example = wanted ? ("health-metrics" as const) : undefined;
  return { example, exampleUsers: integer(env, "STEWARD_EXAMPLE_USERS", 5000, 1, 1_000_000) };
}

/**
 * The default local queue: eight times the concurrency (64 at the default 8), at most 1,000.
 * Every slot waits while its worker fetches the next batch, so the batch decides how often they
 * wait: on 2 cores under load 64 ran about 2.5 times as many no-op jobs as 16, and 128 no more
 * than 64 (docs/performance-history.md, "Job throughput"). Larger batches only hold more due jobs from other workers.
 */
export function defaultLocalQueueSize(concurrency: number): number {
  return Math.min(1000, 8 * concurrency);
}

/** Where the team's own tasks and schedules are (docs/dba-workflow.md, "Your own tasks and schedules"). */
function teamConfig(env: Env) {
  const dirs = env.STEWARD_TASKS_DIR;
  const tasksDirs =
    dirs === undefined
      ? undefined
      : dirs
          .split(path.delimiter)
          .map((dir) => dir.trim())
          .filter(Boolean)
          .map((dir) => path.resolve(dir));
  const crontab = env.STEWARD_CRONTAB?.trim();
  return { tasksDirs, crontabFile: crontab ? path.resolve(crontab) : undefined };
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export function loadConfig(env: Env = process.env): Config {
  const logLevel = (env.LOG_LEVEL ?? "info").toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${env.LOG_LEVEL}"`);
  }
  const databaseUrl = env.DATABASE_URL?.trim() || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError(`DATABASE_URL must be a postgres:// connection string`);
  }
  const concurrency = integer(env, "STEWARD_CONCURRENCY", 8, 1, 1000);
  return {
    databaseUrl,
    dataDir: path.resolve(env.STEWARD_DATA_DIR?.trim() || ".steward"),
    embeddedPort: integer(env, "STEWARD_EMBEDDED_PORT", 54329, 1, 65535),
    healthPort: integer(env, "STEWARD_HEALTH_PORT", 9187, 0, 65535),
    healthHost: env.STEWARD_HEALTH_HOST?.trim() || "127.0.0.1",
    healthTimeoutMs: integer(env, "STEWARD_HEALTH_TIMEOUT_MS", 2000, 100, 60000),
    metricsCacheMs: integer(env, "STEWARD_METRICS_CACHE_MS", 5000, 0, 600000),
    logLevel,
    concurrency,
    localQueueSize: integer(env, "STEWARD_LOCAL_QUEUE_SIZE", defaultLocalQueueSize(concurrency), 0, 10000),
    completeBatchDelayMs: integer(env, "STEWARD_COMPLETE_BATCH_DELAY_MS", 0, 0, 60000),
    shutdownTimeoutMs: integer(env, "STEWARD_SHUTDOWN_TIMEOUT_MS", 10000, 0, 3600000),
    ...sinkConfig(env),
    ...exampleConfig(env, databaseUrl),
    ...teamConfig(env),
  };
}
