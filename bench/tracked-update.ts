// A 100,000-row update of a tracked table (statement-level triggers, tags with a placeholder)
// against the same update of an identical untracked table.
import { defineScenario, timed } from "./scenario.ts";

export const trackedUpdate = defineScenario({
  name: "tracked_update",
  unit: "ms",
  higherIsBetter: false,
  description: "update of every row of a 100,000-row tracked table vs the same untracked table",
  async setup({ pool, quick }) {
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
    await pool.query(
      "select steward.track_table('public.bench_tracked', array['samples', 'samples:provider:{provider}'])",
    );
    return { rows };
  },
  async ours(state, { pool }) {
    // Each round starts from a vacuumed table, so earlier rounds' dead rows favour neither side.
    await pool.query("vacuum public.bench_tracked");
    const ms = await timed(() => pool.query("update public.bench_tracked set value = value + 1"));
    const { rows } = await pool.query("delete from steward.invalidations returning 1");
    return { value: ms, detail: { rows: state.rows, tags: rows.length } };
  },
  async baseline(state, { pool }) {
    await pool.query("vacuum public.bench_untracked");
    return {
      value: await timed(() => pool.query("update public.bench_untracked set value = value + 1")),
      detail: { rows: state.rows },
    };
  },
  async teardown(_state, { pool }) {
    await pool.query("select steward.untrack_table('public.bench_tracked')");
    await pool.query("drop table if exists public.bench_tracked, public.bench_untracked");
  },
});
