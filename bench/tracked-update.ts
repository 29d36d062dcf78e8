// A 100,000-row update of a tracked table against the same update of an identical untracked
// table: `tracked_update` with fixed tags (the triggers capture no rows), and
// `tracked_update_row_tag` with a tag per row, run on a connection made generic-plan-warm by
// ten small tracked writes first, as a pooled application connection is.
import type pg from "pg";
import { defineScenario, timed, type BenchContext } from "./scenario.ts";

interface State {
  rows: number;
  /** One connection kept for every round: it stays as warm as a pool's. */
  client: pg.PoolClient;
}

async function createTables(context: BenchContext, tags: string[]): Promise<State> {
  const { pool, quick } = context;
  const rows = quick ? 50_000 : 100_000;
  for (const table of ["bench_tracked", "bench_untracked"]) {
    await pool.query(`drop table if exists public.${table}`);
    await pool.query(
      `create table public.${table} (id bigint primary key, provider int not null, value int not null, note text)`,
    );
    await pool.query(`insert into public.${table} select g, g % 10, 0, md5(g::text) from generate_series(1, $1) g`, [
      rows,
    ]);
    await pool.query(`vacuum analyze public.${table}`);
  }
  await pool.query("select steward.track_table('public.bench_tracked', $1::text[])", [tags]);
  return { rows, client: await pool.connect() };
}

/** One timed update of every row, from a vacuumed table, so earlier rounds favour neither side. */
async function updateAll(state: State, context: BenchContext, table: string) {
  await context.pool.query(`vacuum public.${table}`);
  return timed(() => state.client.query(`update public.${table} set value = value + 1`));
}

async function teardown(state: State, context: BenchContext) {
  state.client.release();
  await context.pool.query("select steward.untrack_table('public.bench_tracked')");
  await context.pool.query("drop table if exists public.bench_tracked, public.bench_untracked");
  await context.pool.query("delete from steward.invalidations");
}

export const trackedUpdate = defineScenario<State>({
  name: "tracked_update",
  unit: "ms",
  higherIsBetter: false,
  description: "update of every row of a 100,000-row table tracked with fixed tags vs the same untracked table",
  setup: (context) => createTables(context, ["samples", "samples:changed"]),
  async ours(state, context) {
    const ms = await updateAll(state, context, "bench_tracked");
    const { rows } = await context.pool.query("delete from steward.invalidations returning 1");
    return { value: ms, detail: { rows: state.rows, queued: rows.length } };
  },
  async baseline(state, context) {
    return { value: await updateAll(state, context, "bench_untracked"), detail: { rows: state.rows } };
  },
  teardown,
});

export const trackedUpdateRowTag = defineScenario<State>({
  name: "tracked_update_row_tag",
  unit: "ms",
  higherIsBetter: false,
  description:
    "update of every row of a 100,000-row table tracked with a tag per row, on a connection warmed by ten small tracked writes, vs untracked",
  async setup(context) {
    const state = await createTables(context, ["samples", "sample:{id}"]);
    // plpgsql switches a statement to a generic plan after five executions in a session.
    for (let id = 1; id <= 10; id++) {
      await state.client.query("update public.bench_tracked set value = value + 1 where id = $1", [id]);
    }
    return state;
  },
  async ours(state, context) {
    await context.pool.query("delete from steward.invalidations");
    const ms = await updateAll(state, context, "bench_tracked");
    const { rows } = await context.pool.query("delete from steward.invalidations returning 1");
    return { value: ms, detail: { rows: state.rows, queued: rows.length } };
  },
  async baseline(state, context) {
    return { value: await updateAll(state, context, "bench_untracked"), detail: { rows: state.rows } };
  },
  teardown,
});
