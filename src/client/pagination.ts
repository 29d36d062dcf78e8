// Keyset pagination from Node: one page through steward.page, or every page in turn. The SQL
// function does the work (and the checking); this only binds its arguments and follows cursors.
import type { Queryable } from "../database.ts";

export interface PageOptions {
  /** Column names, each optionally followed by " asc" or " desc"; they must include a unique index's columns. */
  orderBy: string[];
  /** Equality on columns; null matches IS NULL. */
  filter?: Record<string, unknown>;
  /** Rows per page, 1 to 1000 (default 50). */
  max?: number;
  /** The `next` of the previous page; omitted or null for the first page. */
  after?: string | null;
}

export interface Page<Row> {
  rows: Row[];
  /** The cursor of the following page, or null on the last page. */
  next: string | null;
}

/** One page of `target` (a table name as SQL would resolve it, e.g. "public.orders"). */
export async function page<Row = Record<string, unknown>>(
  db: Queryable,
  target: string,
  options: PageOptions,
): Promise<Page<Row>> {
  const { rows } = await db.query<{ page: Page<Row> }>(
    "select steward.page($1::regclass, $2::text[], $3, $4, $5::jsonb) as page",
    [target, options.orderBy, options.after ?? null, options.max ?? 50, JSON.stringify(options.filter ?? {})],
  );
  return rows[0]!.page;
}

/**
 * Every page of `target` in order, each fetched when the loop asks for the next one:
 * `for await (const rows of pages(pool, "public.orders", { orderBy: ["created_at desc", "id"] }))`.
 * Each call is its own statement, so the walk is not one snapshot: a row that exists throughout
 * is returned exactly once; a row inserted (or moved by an update of its sort columns) ahead of
 * the position is returned, one behind it is not.
 */
export async function* pages<Row = Record<string, unknown>>(
  db: Queryable,
  target: string,
  options: Omit<PageOptions, "after">,
): AsyncGenerator<Row[], void, undefined> {
  let after: string | null = null;
  do {
    const current: Page<Row> = await page<Row>(db, target, { ...options, after });
    if (current.rows.length > 0) yield current.rows;
    after = current.next;
  } while (after !== null);
}
