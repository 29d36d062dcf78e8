// The dead-letter queue from TypeScript: the statements `steward dlq` and the task wrapper send.
// The logic (the move, replay, purge, audit) is in SQL: migrations/committed/000002-dead-letters.sql.
import type { Job } from "graphile-worker";
import type pg from "pg";

export interface DeadLetter {
  id: string;
  source: "job" | "invalidation";
  task_identifier: string | null;
  payload: unknown;
  queue_name: string | null;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  original_id: string | null;
  failed_at: Date;
  replayed_at: Date | null;
  replayed_as: string | null;
  is_permanent: boolean;
}

export interface DeadLetterPage {
  rows: DeadLetter[];
  /** Pass as `after` for the next page; null on the last page. */
  next: string | null;
}

const COLUMNS = `id::text, source, task_identifier, payload, queue_name, attempts, max_attempts, last_error,
  original_id::text, failed_at, replayed_at, replayed_as::text, is_permanent`;

/** One page of dead letters, newest first. */
export async function listDeadLetters(
  pool: pg.Pool,
  options: { after?: string | null; max?: number } = {},
): Promise<DeadLetterPage> {
  const max = options.max ?? 50;
  const { rows } = await pool.query<DeadLetter & { cursor: string }>(
    `select ${COLUMNS}, cursor from steward.list_dead_letters($1, $2)`,
    [options.after ?? null, max],
  );
  return {
    rows: rows.map(({ cursor: _cursor, ...row }) => row),
    next: rows.length === max ? rows.at(-1)!.cursor : null,
  };
}

/** One dead letter with everything kept about it, or undefined. */
export async function getDeadLetter(
  pool: pg.Pool,
  id: string,
): Promise<
  | (DeadLetter & { job_key: string | null; priority: number | null; flags: string[] | null; enqueued_at: Date | null })
  | undefined
> {
  const { rows } = await pool.query(
    `select ${COLUMNS}, job_key, priority, flags, enqueued_at from steward.dead_letter($1)`,
    [id],
  );
  return rows[0];
}

/** Queues a dead letter again; returns the new job's (or invalidation's) id. */
export async function replayDeadLetter(pool: pg.Pool, id: string): Promise<string> {
  const { rows } = await pool.query<{ id: string }>("select steward.replay_dead_letter($1)::text as id", [id]);
  return rows[0]!.id;
}

/** Deletes dead letters that failed longer ago than `olderThan` (a PostgreSQL interval); returns how many. */
export async function purgeDeadLetters(pool: pg.Pool, olderThan: string): Promise<number> {
  const { rows } = await pool.query<{ purged: string }>(
    "select steward.purge_dead_letters($1::interval)::text as purged",
    [olderThan],
  );
  return Number(rows[0]!.purged);
}

/**
 * Ends a running job's retries before its permanent error is reported: the failure that follows
 * moves it to the dead letters (with this error and its real max_attempts). graphile-worker's
 * in-memory copy is told too, so it reports the attempt as the last (job:failed).
 */
export async function failJobPermanently(pool: pg.Pool, job: Job, error: string): Promise<boolean> {
  const { rows } = await pool.query<{ done: boolean }>("select steward.fail_job_permanently($1, $2, $3) as done", [
    job.id,
    job.locked_by,
    error,
  ]);
  if (rows[0]?.done) job.max_attempts = job.attempts;
  return rows[0]?.done ?? false;
}
