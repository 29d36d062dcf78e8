// Every setting pg-steward reads from the environment, in one place. The README's
// configuration table lists the same names; keep the two together.
import path from "node:path";
import { ConfigError } from "./errors.ts";

export interface Config {
  /** Database to use; when absent the embedded server under `dataDir` is used. */
  databaseUrl: string | undefined;
  /** Where the embedded server keeps its data (`.steward/` in the working directory). */
  dataDir: string;
  /** Port the embedded server prefers; a free one is picked when it is taken. */
  embeddedPort: number;
  /** Health server port; 0 picks a free port. */
  healthPort: number;
  /** Address the health server binds to. */
  healthHost: string;
  logLevel: string;
  /** Jobs run at once by one worker process. */
  concurrency: number;
  /**
   * Jobs a worker locks ahead of running them (graphile-worker localQueue); 0 or 1 disables.
   * Defaults to the concurrency: one fetch fills the slots, and the heartbeat bounds what a
   * crash costs the jobs locked ahead (README, "Throughput").
   */
  localQueueSize: number;
  /**
   * Milliseconds completions and failures are batched for. Never -1 (graphile-worker's
   * unbatched mode): there a completion is not awaited by shutdown and can be lost to it.
   */
  completeBatchDelayMs: number;
  /** How long a shutdown waits for running jobs before releasing them. */
  shutdownTimeoutMs: number;
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
    healthHost: env.STEWARD_HEALTH_HOST?.trim() || "0.0.0.0",
    logLevel,
    concurrency,
    localQueueSize: integer(env, "STEWARD_LOCAL_QUEUE_SIZE", concurrency, -1, 10000),
    completeBatchDelayMs: integer(env, "STEWARD_COMPLETE_BATCH_DELAY_MS", 0, 0, 60000),
    shutdownTimeoutMs: integer(env, "STEWARD_SHUTDOWN_TIMEOUT_MS", 10000, 0, 3600000),
  };
}
