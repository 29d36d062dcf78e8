// What every test file shares: a fresh database copied from the migrated template, real
// connections, a quiet logger, and a worker running in the test process.
import { randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import path from "node:path";
import pg from "pg";
import { afterAll, afterEach, beforeAll, inject } from "vitest";
import { waitForJob, type JobOutcome } from "../src/client/jobs.ts";
import { loadConfig, type Config } from "../src/config.ts";
import { createPool } from "../src/database.ts";
import { withDatabase } from "../src/embedded.ts";
import { createLogger, type Logger } from "../src/logger.ts";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import type { TaskDefinition } from "../src/worker/task.ts";
import { startWorker, type RunningWorker } from "../src/worker/runner.ts";
import type { Schedule } from "../src/worker/schedules.ts";

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
  // metricsCacheMs 0: a test reads /metrics right after a change and expects to see it.
  return {
    ...loadConfig({}),
    healthPort: 0,
    healthHost: "127.0.0.1",
    concurrency: 4,
    metricsCacheMs: 0,
    ...overrides,
  };
}

/** A worker in this process against `db`, with the given tasks (default: all). */
export async function startTestWorker(
  db: TestDatabase,
  options: {
    tasks?: TaskDefinition<unknown>[];
    config?: Partial<Config>;
    health?: boolean;
    statsFlushMs?: number;
    /** None unless given: a test worker runs no cron. */
    schedules?: Schedule[];
  } = {},
): Promise<RunningWorker> {
  return startWorker({
    url: db.url,
    config: testConfig(options.config),
    logger: testLogger(),
    tasks: options.tasks,
    schedules: options.schedules ?? [],
    health: options.health ?? false,
    statsFlushMs: options.statsFlushMs,
  });
}

/**
 * Runs `work` with steward.settings changed (through steward.set_setting), restoring the previous
 * values afterwards, so tests of one file that share a database do not leak settings.
 */
export async function withSettings<T>(
  pool: pg.Pool,
  settings: Record<string, string>,
  work: () => Promise<T>,
): Promise<T> {
  const previous: Record<string, string> = {};
  try {
    for (const [name, value] of Object.entries(settings)) {
      const { rows } = await pool.query<{ previous: string }>("select steward.set_setting($1, $2) as previous", [
        name,
        value,
      ]);
      previous[name] = rows[0]!.previous;
    }
    return await work();
  } finally {
    for (const [name, value] of Object.entries(previous))
      await pool.query("select steward.set_setting($1, $2)", [name, value]);
  }
}

/**
 * A worker for the tests of one file, with every task: `start()` starts it (once; later calls
 * return it) and it stops after each test. `runJob` runs a one-attempt job on it to its end.
 */
export function useTestWorker(context: { readonly db: TestDatabase }) {
  let worker: RunningWorker | undefined;
  afterEach(async () => {
    await worker?.stop();
    worker = undefined;
  });
  const start = async () => (worker ??= await startTestWorker(context.db));
  return {
    start,
    async runJob(task: string, payload: object = {}): Promise<JobOutcome> {
      await start();
      return runJobOnce(context.db, task, payload);
    },
  };
}

/** Runs `work` while another connection holds the lock `statement` takes, in a transaction it then rolls back. */
export async function whileLocked<T>(db: TestDatabase, statement: string, work: () => Promise<T>): Promise<T> {
  const holder = await db.pool.connect();
  try {
    await holder.query("begin");
    await holder.query(statement);
    return await work();
  } finally {
    await holder.query("rollback");
    holder.release();
  }
}

/** Adds a job with a single attempt and waits for its end (a worker must run its task). */
export async function runJobOnce(db: TestDatabase, task: string, payload: object = {}): Promise<JobOutcome> {
  const { rows } = await db.pool.query<{ id: string }>(
    "select id::text from graphile_worker.add_job($1, $2::json, max_attempts => 1)",
    [task, JSON.stringify(payload)],
  );
  return waitForJob(db.pool, rows[0]!.id, { timeoutMs: 60_000 });
}

/** The steward.maintenance_log rows of one action on one table or step, oldest first. */
export async function maintenanceLog(db: TestDatabase, action: string, what: string) {
  const { rows } = await db.pool.query(
    "select status, detail from steward.maintenance_log where action = $1 and what = $2 order by id",
    [action, what],
  );
  return rows;
}

/** Polls `check` until it returns a truthy value (returned), or fails after `timeoutMs`. */
export async function eventually<T>(
  check: () => Promise<T | undefined | false>,
  options: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
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

/** `steward <args>` running as a child process: its output so far, and its exit. */
export interface CliChild {
  child: ChildProcess;
  /** Everything it printed so far. */
  output(): { stdout: string; stderr: string };
  /** Resolves when it has exited and its output has been read to the end. */
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `steward <args>` as a child process, the way a person or systemd would (LOG_LEVEL warn unless set). */
export function spawnCli(args: string[], env: Record<string, string | undefined> = {}): CliChild {
  const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, "bin", "steward.js"), ...args], {
    env: { ...process.env, LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (chunk) => (stdout += chunk));
  child.stderr!.on("data", (chunk) => (stderr += chunk));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
  return { child, output: () => ({ stdout, stderr }), closed };
}

/** Runs `steward <args>` as a child process to its end. */
export async function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  timeoutMs = 60_000,
): Promise<CliResult> {
  const { child, output, closed } = spawnCli(args, env);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      child.kill("SIGKILL");
      const { stdout, stderr } = output();
      reject(new Error(`steward ${args.join(" ")} ran over ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
  });
  try {
    const { code, signal } = await Promise.race([closed, timedOut]);
    return { code, signal, ...output() };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A NOLOGIN role for the tests of one file, with a random name (roles are cluster-wide and test
 * files run in parallel). `drop()` removes its privileges in `db` and the role.
 */
export async function createTestRole(
  db: TestDatabase,
  prefix: string,
): Promise<{ name: string; drop(): Promise<void> }> {
  const name = `${prefix}_${randomBytes(4).toString("hex")}`;
  await db.pool.query(`create role ${name} nologin`);
  return {
    name,
    async drop() {
      await db.pool.query(`drop owned by ${name}`);
      await db.pool.query(`drop role ${name}`);
    },
  };
}

/** Runs `work` on one connection in a transaction as `role` (SET LOCAL ROLE); commits only if asked. */
export async function asRole<T>(
  db: TestDatabase,
  role: string,
  work: (client: pg.PoolClient) => Promise<T>,
  options: { commit?: boolean } = {},
): Promise<T> {
  const client = await db.pool.connect();
  try {
    await client.query("begin");
    await client.query(`set local role ${role}`);
    const result = await work(client);
    await client.query(options.commit ? "commit" : "rollback");
    return result;
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** Who may run a function: steward_client, PUBLIC; and whether it runs as its owner. */
export async function functionAccess(
  pool: pg.Pool,
  signature: string,
): Promise<{ client: boolean; public: boolean; definer: boolean }> {
  const { rows } = await pool.query(
    `select has_function_privilege('steward_client', p.oid, 'execute') as client,
            exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a where a.grantee = 0) as public,
            p.prosecdef as definer
       from pg_proc p where p.oid = $1::regprocedure`,
    [signature],
  );
  return rows[0];
}

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
