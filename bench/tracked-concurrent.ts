// Sixteen connections each committing single-row updates of a tracked table (a table-wide and a
// per-row tag) against the same updates of an identical untracked table: what tracking costs
// writers that run side by side, including any wait of one writer for another. The baseline's
// detail also measures a third identical table whose only addition is a statement trigger that
// does nothing (security definer with a pinned search_path, as tracking's is): the floor of any
// tracking done by a trigger, whatever it enqueues.
import type pg from "pg";
import { openPool } from "./rate-limits.ts";
import { defineScenario, throughput } from "./scenario.ts";

const WRITERS = 16;
const ROWS_PER_WRITER = 1000;

interface State {
  pool: pg.Pool;
  durationMs: number;
}

/** Updates per second from WRITERS loops, each on rows of its own (no row lock is shared). */
async function measure(state: State, table: string) {
  const result = await throughput(WRITERS, state.durationMs, (writer, iteration) =>
    state.pool.query(`update public.${table} set value = value + 1 where id = $1`, [
      writer * ROWS_PER_WRITER + ((iteration * 7919) % ROWS_PER_WRITER) + 1,
    ]),
  );
  return { value: result.perSecond, detail: { updates: result.count, errors: result.errors } };
}

export const trackedConcurrent = defineScenario<State>({
  name: "tracked_concurrent",
  unit: "updates/s",
  higherIsBetter: true,
  description: `${WRITERS} connections committing single-row updates of a tracked table (a table-wide and a per-row tag) vs the same table untracked`,
  async setup({ pool, url, quick }) {
    for (const table of ["bench_concurrent_tracked", "bench_concurrent_untracked", "bench_concurrent_floor"]) {
      await pool.query(`drop table if exists public.${table}`);
      await pool.query(`create table public.${table} (id int primary key, value int not null)`);
      await pool.query(`insert into public.${table} select g, 0 from generate_series(1, $1) g`, [
        WRITERS * ROWS_PER_WRITER,
      ]);
      await pool.query(`vacuum analyze public.${table}`);
    }
    await pool.query(
      "select steward.track_table('public.bench_concurrent_tracked', array['accounts', 'account:{id}'])",
    );
    await pool.query(`
      create or replace function public.bench_noop_trigger() returns trigger
      language plpgsql security definer set search_path = pg_catalog, pg_temp
      as $$ begin return null; end $$;
      create trigger bench_noop after update on public.bench_concurrent_floor
        for each statement execute function public.bench_noop_trigger();`);
    return { pool: await openPool(url, "steward bench: tracked_concurrent"), durationMs: quick ? 1500 : 5000 };
  },
  async ours(state, { pool }) {
    await pool.query("delete from steward.invalidations");
    const measured = await measure(state, "bench_concurrent_tracked");
    const { rows } = await pool.query("select count(*)::int as n from steward.invalidations");
    return { ...measured, detail: { ...measured.detail, queued: rows[0].n } };
  },
  async baseline(state) {
    const untracked = await measure(state, "bench_concurrent_untracked");
    const floor = await measure(state, "bench_concurrent_floor");
    return {
      ...untracked,
      detail: {
        ...untracked.detail,
        noop_trigger_updates_per_s: Math.round(floor.value),
        noop_trigger_ratio: Number((floor.value / untracked.value).toFixed(2)),
      },
    };
  },
  async teardown(state, { pool }) {
    await state.pool.end();
    await pool.query("select steward.untrack_table('public.bench_concurrent_tracked')");
    await pool.query(
      "drop table if exists public.bench_concurrent_tracked, public.bench_concurrent_untracked, public.bench_concurrent_floor",
    );
    await pool.query("drop function if exists public.bench_noop_trigger()");
    await pool.query("delete from steward.invalidations");
    await pool.query("vacuum steward.invalidations");
  },
});
