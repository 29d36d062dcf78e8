// `steward migrate`: graphile-worker's schema first (our dead-letter trigger sits on its job
// table), then graphile-migrate's committed migrations from `migrations/committed/`.
import fs from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import graphileMigrate from "graphile-migrate";
// graphile-migrate keeps its pool open for 200 ms after use and exits the process if that pool
// loses a connection (as when the embedded server stops right after migrating): end it now.
import { clearAllPools } from "graphile-migrate/dist/pgReal.js";
import { runMigrations } from "graphile-worker";
import type pg from "pg";
import { createPool } from "./database.ts";
import { checkMigrationChain, committedChain, type ChainProblem, MigrationChainError } from "./migration-chain.ts";
import { PACKAGE_ROOT } from "./package-root.ts";
import { isUndefinedRelation } from "./errors.ts";
import { graphileLogger, logFunctions, type Logger } from "./logger.ts";

export { PACKAGE_ROOT };
export const MIGRATIONS_FOLDER = path.join(PACKAGE_ROOT, "migrations");

/** Our triggers on graphile-worker's tables, each installed again by `migrate` when missing. */
const TRIGGER_INSTALLERS = [
  ["steward.install_dead_letter_trigger()", "the dead-letter trigger on graphile_worker._private_jobs"],
  ["steward.install_queue_wakeup_trigger()", "the named-queue wake-up trigger on graphile_worker._private_job_queues"],
] as const;

/** The graphile-worker schema version (its `migrations` table) the installed package brings. */
async function expectedWorkerSchemaVersion(): Promise<number> {
  const entry = createRequire(import.meta.url).resolve("graphile-worker");
  const files = await fs.readdir(path.join(path.dirname(entry), "..", "sql"));
  return Math.max(...files.filter((file) => /^\d{6}\.sql$/.test(file)).map((file) => Number(file.slice(0, 6))));
}

export interface MigrationStatus {
  workerSchema: number | null;
  expectedWorkerSchema: number;
  lastApplied: string | null;
  lastCommitted: string | null;
  /** Where the applied chain departs from migrations/committed/ (migration-chain.ts). */
  chain: ChainProblem[];
  current: boolean;
}

async function scalar<T>(pool: pg.Pool, sql: string): Promise<T | null> {
  try {
    const { rows } = await pool.query(sql);
    return (rows[0]?.value as T | undefined) ?? null;
  } catch (error) {
    if (isUndefinedRelation(error)) return null;
    throw error;
  }
}

/** Whether both schemas are at the versions this code expects. */
export async function migrationStatus(pool: pg.Pool): Promise<MigrationStatus> {
  const [workerSchema, lastApplied, committed, expectedWorkerSchema, chain] = await Promise.all([
    scalar<number>(pool, "select max(id) as value from graphile_worker.migrations"),
    scalar<string>(pool, "select max(filename) as value from graphile_migrate.migrations"),
    committedChain(MIGRATIONS_FOLDER),
    expectedWorkerSchemaVersion(),
    checkMigrationChain(pool, MIGRATIONS_FOLDER),
  ]);
  const lastCommitted = committed.at(-1)?.filename ?? null;
  return {
    workerSchema,
    expectedWorkerSchema,
    lastApplied,
    lastCommitted,
    chain,
    current: workerSchema === expectedWorkerSchema && lastApplied === lastCommitted && chain.length === 0,
  };
}

/**
 * Applies graphile-worker's schema, then our committed migrations. Safe to run again.
 * `migrationsFolder` is for tests that install an earlier version first.
 */
export async function migrate(
  url: string,
  logger: Logger,
  options: { migrationsFolder?: string } = {},
): Promise<MigrationStatus> {
  const log = logger.child({ component: "migrate" });
  const began = Date.now();
  const migrationsFolder = options.migrationsFolder ?? MIGRATIONS_FOLDER;
  // Before anything is applied: graphile-migrate would skip what a diverging chain hides.
  const checkPool = createPool(url, { max: 1, applicationName: "steward migrate" });
  try {
    const problems = await checkMigrationChain(checkPool, migrationsFolder);
    if (problems.length) throw new MigrationChainError(problems);
  } finally {
    await checkPool.end();
  }
  await runMigrations({ connectionString: url, logger: graphileLogger(log) });
  try {
    await graphileMigrate.migrate({
      connectionString: url,
      migrationsFolder,
      // `.gmrc` installs graphile-worker's schema in beforeAllMigrations for the DBA loop
      // (watch, commit, reset); here it has just been done above.
      beforeAllMigrations: [],
      logger: new graphileMigrate.Logger(logFunctions(log)),
    });
  } finally {
    clearAllPools();
  }
  // createPool's error listeners: a server stopped right after migrating (the test setup's
  // teardown) can end a connection while the pool closes it, and must not crash the process.
  const pool = createPool(url, { max: 2, applicationName: "steward migrate" });
  try {
    // A graphile-worker upgrade may re-create its tables, and our triggers on them go too.
    // (An installer is missing only when `migrationsFolder` holds an earlier version.)
    for (const [installer, what] of TRIGGER_INSTALLERS) {
      const { rows: present } = await pool.query<{ present: boolean }>(
        "select pg_catalog.to_regprocedure($1) is not null as present",
        [installer],
      );
      if (!present[0]?.present) continue;
      const { rows } = await pool.query<{ installed: boolean }>(`select ${installer} as installed`);
      if (rows[0]?.installed) log.warn(`${what} was missing; installed it again`);
    }
    const status = await migrationStatus(pool);
    log.info({ ...status, ms: Date.now() - began }, "migrations applied");
    return status;
  } finally {
    await pool.end();
  }
}
