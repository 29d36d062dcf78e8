// What every test file shares: a fresh database copied from the migrated template, real
// connections, a quiet logger, and a worker running in the test process.
import { randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, inject } from "vitest";
import { loadConfig, type Config } from "../src/config.ts";
import { createPool } from "../src/database.ts";
import { withDatabase } from "../src/embedded.ts";
import { createLogger, type Logger } from "../src/logger.ts";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import type { TaskDefinition } from "../src/task.ts";
import { startWorker, type RunningWorker } from "../src/worker.ts";

export interface TestDatabase {
  name: string;
  url: string;
  /** A pool connected as the database owner (the role that migrated). */
  pool: pg.Pool;
  drop(): Promise<void>;
}

export const adminUrl = () => inject("adminUrl");
export const serverVersion = () => inject("serverVersion");

export function testLogger(): Logger {
  return createLogger(process.env.TEST_LOG_LEVEL ?? "silent", { destination: 2, pretty: false });
}

/** Runs `work` with a client connected to the server's maintenance database. */
export async function withAdmin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** A new database, a copy of the migrated template. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const template = inject("templateDatabase");
  const name = `steward_test_${template.split("_").at(-1)}_${randomBytes(4).toString("hex")}`;
  await withAdmin(async (client) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await client.query(`create database ${name} template ${template}`);
        return;
      } catch (error) {
        // Two copies of one template at the same instant can collide ("being accessed by other users").
        if ((error as { code?: string }).code !== "55006" || attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200));
      }
    }
  });
  const url = withDatabase(adminUrl(), name);
  const pool = createPool(url, { max: 20, applicationName: "steward test" });
  return {
    name,
    url,
    pool,
    async drop() {
      await pool.end();
      await withAdmin((client) => client.query(`drop database if exists ${name} with (force)`));
    },
  };
}

/** A database for the whole test file: created before its tests, dropped after. */
export function useTestDatabase(): { readonly db: TestDatabase } {
  let db: TestDatabase | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });
  return {
    get db() {
      if (!db) throw new Error("the test database is created in beforeAll");
      return db;
    },
  };
}

export function testConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({}), healthPort: 0, healthHost: "127.0.0.1", concurrency: 4, ...overrides };
}

/** A worker in this process against `db`, with the given tasks (default: all). */
export async function startTestWorker(
  db: TestDatabase,
  options: { tasks?: TaskDefinition<unknown>[]; config?: Partial<Config>; health?: boolean; statsFlushMs?: number } = {},
): Promise<RunningWorker> {
  return startWorker({
    url: db.url,
    config: testConfig(options.config),
    logger: testLogger(),
    tasks: options.tasks,
    schedules: [],
    health: options.health ?? false,
    statsFlushMs: options.statsFlushMs,
  });
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function eventually<T>(
  check: () => Promise<T | undefined | false>,
  options: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${options.what ?? "a condition"}`, { cause: lastError });
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 50));
  }
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `steward <args>` as a child process, the way a person or systemd would. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, "bin", "steward.js"), ...args], {
      env: { ...process.env, LOG_LEVEL: "warn", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`steward ${args.join(" ")} ran over ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
