// Maintenance: refreshing registered materialized views, VACUUM, and cleanup of rows past their
// retention. The decisions live in SQL (migrations/committed/000004-maintenance.sql); this module
// sends what cannot be sent from inside a function: the statement_timeout of a refresh (it
// applies from the next statement on), VACUUM (never inside a transaction), and cleanup batches
// that are each their own transaction.
import type pg from "pg";
import { PermanentError } from "../errors.ts";
import type { Logger } from "../logger.ts";

type Queryable = pg.Pool | pg.PoolClient;

/**
 * SQLSTATEs that mean the payload names something that cannot be refreshed or vacuumed (no such
 * relation or schema, a bad name, the wrong kind of relation, not registered): retrying cannot help.
 */
const BAD_REFERENCE = new Set(["42P01", "3F000", "42602", "42601", "42704", "22023", "22004", "P0002"]);

function permanentIfBadReference(task: string, error: unknown): unknown {
  const code = (error as { code?: string }).code;
  if (code && BAD_REFERENCE.has(code)) {
    const hint = (error as { hint?: string }).hint;
    return new PermanentError(`${task}: ${(error as Error).message}${hint ? ` (hint: ${hint})` : ""}`, { cause: error });
  }
  return error;
}

/** Interval settings in milliseconds, in the order asked. */
async function intervalSettingsMs(db: Queryable, names: string[]): Promise<number[]> {
  const { rows } = await db.query<{ ms: number }>(
    `select (extract(epoch from steward.setting_interval(s.name)) * 1000)::float8 as ms
       from unnest($1::text[]) with ordinality as s(name, ordinal) order by s.ordinal`,
    [names],
  );
  return rows.map((row) => row.ms);
}

type SessionSetting = "lock_timeout" | "statement_timeout";

/** Runs `work` on one client with session settings, reset (or the client dropped) afterwards. */
async function withSessionSettings<T>(
  pool: pg.Pool,
  settings: Partial<Record<SessionSetting, string>>,
  work: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let unusable: Error | undefined;
  try {
    for (const [name, value] of Object.entries(settings)) {
      await client.query("select pg_catalog.set_config($1, $2, false)", [name, value]);
    }
    return await work(client);
  } finally {
    for (const name of Object.keys(settings)) {
      await client.query(`reset ${name}`).catch((error: Error) => (unusable = error));
    }
    client.release(unusable);
  }
}

/**
 * Cancels the statement `client` is running when `signal` aborts (the worker is stopping), so a
 * long REFRESH or VACUUM does not hold the shutdown. Returns the function that stops listening.
 */
function cancelOnAbort(pool: pg.Pool, client: pg.PoolClient, signal: AbortSignal | undefined): () => void {
  const pid = (client as pg.PoolClient & { processID?: number }).processID;
  if (!signal || pid === undefined) return () => {};
  const cancel = () => void pool.query("select pg_catalog.pg_cancel_backend($1)", [pid]).catch(() => undefined);
  if (signal.aborted) cancel();
  else signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}

// Materialized views ---------------------------------------------------------------------------

export interface RefreshLogEntry {
  id: string;
  view: string;
  started_at: Date;
  finished_at: Date;
  duration_ms: number;
  waited_ms: number;
  concurrently: boolean | null;
  status: "ok" | "failed" | "skipped";
  error: string | null;
}

/**
 * Refreshes one registered view (steward.refresh_materialized_view) under
 * maintenance.refresh_statement_timeout and returns its refresh_log row. A name that is not a
 * registered materialized view is a PermanentError; a refresh that fails is returned, not thrown.
 */
export async function refreshMaterializedView(
  pool: pg.Pool,
  view: string,
  options: { signal?: AbortSignal } = {},
): Promise<RefreshLogEntry> {
  const client = await pool.connect();
  let unusable: Error | undefined;
  const stopListening = cancelOnAbort(pool, client, options.signal);
  try {
    await client.query("begin");
    // Transaction-local, so the pooled connection keeps its own timeout afterwards.
    await client.query(
      `select pg_catalog.set_config('statement_timeout',
         (extract(epoch from steward.setting_interval('maintenance.refresh_statement_timeout')) * 1000)::bigint::text, true)`,
    );
    const { rows } = await client.query<RefreshLogEntry>(
      `select id::text, view, started_at, finished_at, duration_ms, waited_ms, l.concurrently, status, error
         from steward.refresh_materialized_view($1::text::regclass) l`,
      [view],
    );
    await client.query("commit");
    return rows[0]!;
  } catch (error) {
    await client.query("rollback").catch((rollbackError: Error) => (unusable = rollbackError));
    throw permanentIfBadReference("refresh_materialized_view", error);
  } finally {
    stopListening();
    client.release(unusable);
  }
}

export interface ScheduledRefresh {
  view: string;
  job_id: string;
  run_at: Date;
}

/** Enqueues the refreshes whose refresh_every has passed (steward.schedule_due_refreshes). */
export async function scheduleDueRefreshes(pool: pg.Pool): Promise<ScheduledRefresh[]> {
  const { rows } = await pool.query<ScheduledRefresh>(
    "select view, job_id::text, run_at from steward.schedule_due_refreshes()",
  );
  return rows;
}

// VACUUM ---------------------------------------------------------------------------------------

interface VacuumTarget {
  target: string;
  is_queue_table: boolean;
  dead_tuples: string | null;
  live_tuples: string | null;
  reason: string;
  statement: string;
}

export interface VacuumSummary {
  planned: number;
  vacuumed: string[];
  skipped: string[];
  failed: string[];
  /** Not started: the time budget ran out or the worker is stopping. */
  deferred: string[];
}

/**
 * VACUUM (ANALYZE, SKIP_LOCKED) of the tables steward.vacuum_plan picks (or of `tables`), one at a
 * time on one connection in autocommit mode, each logged to steward.maintenance_log. A table
 * another session holds locked is logged `skipped` (VACUUM warns instead of waiting). Throws when
 * any VACUUM failed, after trying the others.
 */
export async function vacuumTables(
  pool: pg.Pool,
  tables: string[] | undefined,
  options: { signal?: AbortSignal; logger: Logger },
): Promise<VacuumSummary> {
  let plan: VacuumTarget[];
  try {
    ({ rows: plan } = await pool.query<VacuumTarget>(
      "select target, is_queue_table, dead_tuples::text, live_tuples::text, reason, statement from steward.vacuum_plan($1::text[]::regclass[])",
      [tables ?? null],
    ));
  } catch (error) {
    throw permanentIfBadReference("vacuum_tables", error);
  }
  const [budgetMs, lockTimeoutMs, statementTimeoutMs] = await intervalSettingsMs(pool, [
    "maintenance.vacuum_time_budget",
    "maintenance.lock_timeout",
    "maintenance.vacuum_statement_timeout",
  ]);
  const summary: VacuumSummary = { planned: plan.length, vacuumed: [], skipped: [], failed: [], deferred: [] };
  if (plan.length === 0) return summary;

  const deadline = performance.now() + budgetMs!;
  const settings = { lock_timeout: `${Math.round(lockTimeoutMs!)}`, statement_timeout: `${Math.round(statementTimeoutMs!)}` };
  await withSessionSettings(pool, settings, async (client) => {
    for (const [index, table] of plan.entries()) {
      if (options.signal?.aborted || performance.now() >= deadline) {
        summary.deferred = plan.slice(index).map((t) => t.target);
        break;
      }
      // SKIP_LOCKED reports a table it could not lock as a warning (55P03), not an error.
      const notices: Array<{ code?: string; message?: string }> = [];
      const onNotice = (notice: { code?: string; message?: string }) => void notices.push(notice);
      client.on("notice", onNotice);
      const startedAt = new Date();
      const began = performance.now();
      let status: "ok" | "skipped" | "failed" = "ok";
      let error: string | undefined;
      const stopListening = cancelOnAbort(pool, client, options.signal);
      try {
        await client.query(table.statement);
      } catch (caught) {
        status = "failed";
        error = (caught as Error).message;
      } finally {
        stopListening();
        client.off("notice", onNotice);
      }
      const refused = notices.find((notice) => notice.code === "55P03" || notice.code === "42501");
      if (status === "ok" && refused) status = "skipped";
      const durationMs = performance.now() - began;
      const detail = {
        reason: table.reason,
        is_queue_table: table.is_queue_table,
        dead_tuples: table.dead_tuples === null ? null : Number(table.dead_tuples),
        live_tuples: table.live_tuples === null ? null : Number(table.live_tuples),
        statement: table.statement,
        ...(refused ? { warning: refused.message } : {}),
        ...(error ? { error } : {}),
      };
      await pool.query("select steward.record_maintenance('vacuum', $1, $2, $3, $4, $5::jsonb)", [
        table.target,
        startedAt,
        durationMs,
        status,
        JSON.stringify(detail),
      ]);
      ({ ok: summary.vacuumed, skipped: summary.skipped, failed: summary.failed })[status].push(table.target);
      options.logger.debug({ table: table.target, status, ms: Math.round(durationMs) }, "vacuum");
    }
  });
  if (summary.failed.length) {
    throw new Error(
      `vacuum_tables: ${summary.failed.length} of ${plan.length} tables failed (${summary.failed.join(", ")}); see steward.maintenance_log`,
    );
  }
  return summary;
}

// Cleanup --------------------------------------------------------------------------------------

export interface CleanupStepResult {
  step: string;
  deleted: number;
  batches: number;
  status: "ok" | "failed";
  /** False when the time budget or a shutdown stopped the step with rows left. */
  complete: boolean;
  error?: string;
}

/**
 * Runs every step of steward.cleanup_steps in batches of maintenance.cleanup_batch_size, each batch
 * its own transaction, until the step deletes fewer than a batch or maintenance.cleanup_time_budget
 * runs out (every step still gets its first batch, so one large step cannot starve the rest).
 * Each step is logged to steward.maintenance_log. Throws when any step failed, after the others ran.
 */
export async function runCleanup(
  pool: pg.Pool,
  options: { signal?: AbortSignal; logger: Logger },
): Promise<CleanupStepResult[]> {
  const { rows: steps } = await pool.query<{ name: string }>("select name from steward.cleanup_steps order by name");
  const { rows } = await pool.query<{ batch_size: number }>(
    "select steward.setting_integer('maintenance.cleanup_batch_size') as batch_size",
  );
  const batchSize = rows[0]!.batch_size;
  const [budgetMs, lockTimeoutMs] = await intervalSettingsMs(pool, [
    "maintenance.cleanup_time_budget",
    "maintenance.lock_timeout",
  ]);
  const deadline = performance.now() + budgetMs!;
  const results: CleanupStepResult[] = [];
  await withSessionSettings(pool, { lock_timeout: `${Math.round(lockTimeoutMs!)}` }, async (client) => {
    for (const { name } of steps) {
      const startedAt = new Date();
      const began = performance.now();
      const result: CleanupStepResult = { step: name, deleted: 0, batches: 0, status: "ok", complete: false };
      try {
        for (;;) {
          // One statement in autocommit: each batch commits on its own and holds its locks briefly.
          const { rows: batch } = await client.query<{ deleted: string }>(
            "select steward.run_cleanup_step($1, $2)::text as deleted",
            [name, batchSize],
          );
          const deleted = Number(batch[0]!.deleted);
          result.deleted += deleted;
          result.batches += 1;
          if (deleted < batchSize) {
            result.complete = true;
            break;
          }
          if (performance.now() >= deadline || options.signal?.aborted) break;
        }
      } catch (error) {
        result.status = "failed";
        result.error = (error as Error).message;
      }
      const durationMs = performance.now() - began;
      await pool.query("select steward.record_maintenance('cleanup', $1, $2, $3, $4, $5::jsonb)", [
        name,
        startedAt,
        durationMs,
        result.status,
        JSON.stringify({
          deleted: result.deleted,
          batches: result.batches,
          batch_size: batchSize,
          complete: result.complete,
          ...(result.error ? { error: result.error } : {}),
        }),
      ]);
      options.logger.debug({ ...result, ms: Math.round(durationMs) }, "cleanup step");
      results.push(result);
    }
  });
  const failed = results.filter((result) => result.status === "failed");
  if (failed.length) {
    throw new Error(
      `cleanup: ${failed.length} of ${results.length} steps failed (${failed.map((f) => `${f.step}: ${f.error}`).join("; ")})`,
    );
  }
  return results;
}
