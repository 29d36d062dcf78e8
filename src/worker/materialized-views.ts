// Refreshing registered materialized views. The decisions live in SQL
// (migrations/committed/000008-materialized-views.sql); this module sends what cannot be sent
// from inside a function: the statement_timeout of a refresh, which applies from the next
// statement on.
import type pg from "pg";
import { cancelOnAbort, withTransaction } from "../database.ts";
import { permanentIfHopeless } from "../errors.ts";

export interface RefreshLogEntry {
  id: string;
  view: string;
  started_at: Date;
  finished_at: Date;
  duration_ms: number;
  waited_ms: number;
  ran_concurrently: boolean | null;
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
  try {
    return await withTransaction(pool, async (client) => {
      const stopListening = cancelOnAbort(pool, client, options.signal);
      try {
        // Transaction-local, so the pooled connection keeps its own timeout afterwards.
        await client.query(
          `select pg_catalog.set_config('statement_timeout',
             (extract(epoch from steward.setting_interval('maintenance.refresh_statement_timeout')) * 1000)::bigint::text, true)`,
        );
        const { rows } = await client.query<RefreshLogEntry>(
          `select id::text, view, started_at, finished_at, duration_ms, waited_ms, ran_concurrently, status, error
             from steward.refresh_materialized_view($1::text::regclass) l`,
          [view],
        );
        return rows[0]!;
      } finally {
        stopListening();
      }
    });
  } catch (error) {
    throw permanentIfHopeless("refresh_materialized_view", error);
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
