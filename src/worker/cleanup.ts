// Cleanup of rows past their retention: every step of steward.cleanup_steps in bounded batches,
// each batch its own transaction (migrations/committed/000010-cleanup.sql runs one batch).
import type pg from "pg";
import { intervalSettingsMs, withSessionSettings } from "../database.ts";
import type { Logger } from "../logger.ts";

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
  const { rows: steps } = await pool.query<{ name: string }>("select name from steward.cleanup_step_names() as name");
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
