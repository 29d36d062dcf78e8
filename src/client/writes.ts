// Two writes applications make through steward's SQL: a batch insert (steward.batch_insert, with
// the caller's own privileges and row-level security) and a cache invalidation
// (steward.enqueue_invalidation, deduplicated while pending). Both bind arguments only; the SQL
// checks them.
import type { Queryable } from "../database.ts";

export interface BatchInsertOptions {
  /** `error` (default): a conflicting row fails the whole call; `ignore`: it is skipped. */
  onConflict?: "error" | "ignore";
}

/** Inserts `rows` (at most 10,000 objects, keys = column names) into `target` in one statement; returns the count. */
export async function batchInsert(
  db: Queryable,
  target: string,
  rows: Record<string, unknown>[],
  options: BatchInsertOptions = {},
): Promise<number> {
  const result = await db.query<{ inserted: string }>(
    "select steward.batch_insert($1::regclass, $2::jsonb, $3) as inserted",
    [target, JSON.stringify(rows), options.onConflict ?? "error"],
  );
  return Number(result.rows[0]!.inserted);
}

/**
 * Enqueues an invalidation of `tag` (one pending entry per tag); `debounceMs` may push its
 * delivery back, never past the first enqueue plus the invalidations.max_delay setting.
 * Returns the id of the pending entry.
 */
export async function enqueueInvalidation(
  db: Queryable,
  tag: string,
  options: { debounceMs?: number } = {},
): Promise<string> {
  const result = await db.query<{ id: string }>(
    "select steward.enqueue_invalidation($1, $2 * interval '1 millisecond')::text as id",
    [tag, options.debounceMs ?? 0],
  );
  return result.rows[0]!.id;
}
