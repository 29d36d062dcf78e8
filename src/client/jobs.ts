// Enqueueing jobs by hand (`steward run`) and waiting for their outcome.
import type pg from "pg";
import { withTransaction } from "../database.ts";

export interface EnqueueOptions {
  queueName?: string;
  runAt?: Date;
  maxAttempts?: number;
  jobKey?: string;
  priority?: number;
}

/** Enqueues one job and records the manual run in the audit log, in one transaction. */
export async function enqueueJob(
  pool: pg.Pool,
  task: string,
  payload: unknown,
  options: EnqueueOptions = {},
): Promise<string> {
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<{ id: string }>(
      `select id::text from graphile_worker.add_job(
         identifier => $1, payload => $2::json, queue_name => $3, run_at => $4,
         max_attempts => $5, job_key => $6, priority => $7)`,
      [
        task,
        JSON.stringify(payload ?? {}),
        options.queueName ?? null,
        options.runAt ?? null,
        options.maxAttempts ?? null,
        options.jobKey ?? null,
        options.priority ?? null,
      ],
    );
    const id = rows[0]!.id;
    await client.query("select steward.audit('run', $1, $2::jsonb)", [
      task,
      JSON.stringify({ job_id: id, payload: payload ?? {} }),
    ]);
    return id;
  });
}

export type JobOutcome =
  | { state: "completed" }
  | { state: "failed"; attempts: number; error: string | null; deadLetterId: string | null }
  | { state: "pending"; attempts: number; maxAttempts: number; lastError: string | null; running: boolean };

/**
 * Where a job stands (steward.job_outcome): still queued or running, completed (gone), or failed
 * for good (moved to steward.dead_letters; or, without the dead-letter trigger, left exhausted
 * in graphile-worker's table).
 */
export async function jobOutcome(pool: pg.Pool, id: string): Promise<JobOutcome> {
  const { rows } = await pool.query<{
    state: JobOutcome["state"];
    attempts: number;
    max_attempts: number;
    last_error: string | null;
    is_running: boolean;
    dead_letter_id: string | null;
  }>(
    "select state, attempts, max_attempts, last_error, is_running, dead_letter_id::text from steward.job_outcome($1)",
    [id],
  );
  const job = rows[0]!;
  if (job.state === "completed") return { state: "completed" };
  if (job.state === "failed") {
    return { state: "failed", attempts: job.attempts, error: job.last_error, deadLetterId: job.dead_letter_id };
  }
  return {
    state: "pending",
    attempts: job.attempts,
    maxAttempts: job.max_attempts,
    lastError: job.last_error,
    running: job.is_running,
  };
}

/** Polls until the job completes or fails for good, or `timeoutMs` passes (then the last state). */
export async function waitForJob(
  pool: pg.Pool,
  id: string,
  options: { timeoutMs: number; intervalMs?: number; onProgress?: (outcome: JobOutcome) => void },
): Promise<JobOutcome> {
  const deadline = Date.now() + options.timeoutMs;
  let last = "";
  for (;;) {
    const outcome = await jobOutcome(pool, id);
    if (outcome.state !== "pending" || Date.now() >= deadline) return outcome;
    const key = JSON.stringify(outcome);
    if (key !== last) options.onProgress?.(outcome);
    last = key;
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 200));
  }
}
