// VACUUM (ANALYZE) of the tables steward.vacuum_plan picks, one at a time. The plan lives in SQL
// (migrations/committed/000009-vacuum.sql); VACUUM itself is sent from here because it never
// runs inside a transaction, hence never inside a function.
import type pg from "pg";
import { cancelOnAbort, intervalSettingsMs, withSessionSettings } from "../database.ts";
import { permanentIfHopeless } from "../errors.ts";
import type { Logger } from "../logger.ts";

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
    throw permanentIfHopeless("vacuum_tables", error);
  }
  const [budgetMs, lockTimeoutMs, statementTimeoutMs] = await intervalSettingsMs(pool, [
    "maintenance.vacuum_time_budget",
    "maintenance.lock_timeout",
    "maintenance.vacuum_statement_timeout",
  ]);
  const summary: VacuumSummary = { planned: plan.length, vacuumed: [], skipped: [], failed: [], deferred: [] };
  if (plan.length === 0) return summary;

  const deadline = performance.now() + budgetMs!;
  const settings = {
    lock_timeout: `${Math.round(lockTimeoutMs!)}`,
    statement_timeout: `${Math.round(statementTimeoutMs!)}`,
  };
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
