// A page deep into a big table: steward.page from a cursor against LIMIT … OFFSET, both through
// node-postgres, newest first with ties broken by id.
import { page } from "../src/client/pagination.ts";
import { median } from "./run.ts";
import { defineScenario, timed } from "./scenario.ts";

const TABLE = "public.bench_keyset";
const ORDER_BY = ["created_at desc", "id"];
const PAGE_SIZE = 50;

/** Milliseconds of each of `count` calls of `work`, one after another. */
async function timedCalls(count: number, work: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let call = 0; call < count; call++) times.push(await timed(work));
  return times;
}

interface State {
  depth: number;
  /** The cursor whose page starts right after `depth` rows. */
  cursor: string;
}

export const keysetVsOffset = defineScenario<State>({
  name: "keyset_vs_offset",
  unit: "ms",
  higherIsBetter: false,
  description: `one page of ${PAGE_SIZE} rows at depth 1,000,000 (--quick: 200,000), newest first: steward.page from a cursor vs LIMIT/OFFSET`,
  async setup({ pool, quick }) {
    const depth = quick ? 200_000 : 1_000_000;
    // Three rows per second of created_at, so the order needs id to be unique.
    await pool.query(`
      drop table if exists ${TABLE};
      create table ${TABLE} (id bigint primary key, created_at timestamptz not null, user_id integer not null, title text not null);
      insert into ${TABLE}
      select g, timestamptz '2024-01-01 00:00:00+00' + (g / 3) * interval '1 second', g % 5000, 'title ' || g
        from generate_series(1, ${depth + 10_000}) g;
      create index on ${TABLE} (created_at desc, id);`);
    await pool.query(`vacuum analyze ${TABLE}`);
    // Reach the depth the way a client would: following cursors, in pages of the largest size.
    let cursor: string | null = null;
    for (let read = 0; read < depth; read += 1000) {
      cursor = (await page(pool, TABLE, { orderBy: ORDER_BY, max: 1000, after: cursor })).next;
    }
    // Both sides must return the same rows, or the comparison means nothing.
    const ours = await page<{ id: string }>(pool, TABLE, { orderBy: ORDER_BY, max: PAGE_SIZE, after: cursor });
    const { rows } = await pool.query(`select id from ${TABLE} order by created_at desc, id limit $1 offset $2`, [
      PAGE_SIZE,
      depth,
    ]);
    if (JSON.stringify(ours.rows.map((row) => String(row.id))) !== JSON.stringify(rows.map((row) => row.id))) {
      throw new Error("keyset_vs_offset: steward.page and OFFSET disagree on the page at depth");
    }
    return { depth, cursor: cursor! };
  },
  // The median of several calls per round on both sides: a single call is at the mercy of the
  // scheduler on a shared machine.
  async ours({ depth, cursor }, { pool }) {
    const calls = await timedCalls(21, () => page(pool, TABLE, { orderBy: ORDER_BY, max: PAGE_SIZE, after: cursor }));
    return { value: median(calls), detail: { depth, calls: calls.length } };
  },
  async baseline({ depth }, { pool }) {
    const calls = await timedCalls(3, () =>
      pool.query(`select * from ${TABLE} order by created_at desc, id limit $1 offset $2`, [PAGE_SIZE, depth]),
    );
    return { value: median(calls), detail: { depth, calls: calls.length } };
  },
  async teardown(_, { pool }) {
    await pool.query(`drop table if exists ${TABLE}`);
  },
});
