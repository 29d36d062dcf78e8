// Invalidations delivered per second by the drain (claim, notify sink, complete) against a
// bare `delete … returning` loop over a plain table that sends the same notifications: the
// difference is what dedup, visibility timeouts and retries cost.
import { drainUntilEmpty, notifyPayloads, notifySink } from "../src/worker/invalidations.ts";
import { defineScenario } from "./scenario.ts";

const BATCH = 500;

export const drain = defineScenario({
  name: "drain",
  unit: "tags/s",
  higherIsBetter: true,
  description: "invalidations delivered per second through the notify sink vs a bare delete … returning loop",
  async setup({ pool, quick }) {
    await pool.query(
      "create table if not exists public.bench_bare_queue (id bigserial primary key, tag text not null)",
    );
    return { tags: quick ? 50_000 : 200_000 };
  },
  async ours(state, { pool, logger }) {
    // A clean queue, as the baseline's truncated table: dead rows left at the head of the queue
    // by an earlier round or scenario are walked by claims until vacuum removes them.
    await pool.query("delete from steward.invalidations");
    await pool.query("vacuum steward.invalidations");
    await pool.query(
      "select steward.enqueue_invalidations(array(select 'bench:' || g from generate_series(1, $1) g))",
      [state.tags],
    );
    const began = performance.now();
    const result = await drainUntilEmpty(
      { pool, sinks: [notifySink(pool, "steward_bench")], logger, batchSize: BATCH, visibilityMs: 60_000 },
      600_000,
    );
    const seconds = (performance.now() - began) / 1000;
    return { value: result.delivered / seconds, detail: { delivered: result.delivered, batches: result.batches } };
  },
  async baseline(state, { pool }) {
    await pool.query("truncate public.bench_bare_queue");
    await pool.query("insert into public.bench_bare_queue (tag) select 'bench:' || g from generate_series(1, $1) g", [
      state.tags,
    ]);
    // Statistics for the refilled table: planned as empty, the loop's join reads it whole per batch.
    await pool.query("analyze public.bench_bare_queue");
    const began = performance.now();
    let delivered = 0;
    for (;;) {
      const { rows } = await pool.query<{ tag: string }>(
        `delete from public.bench_bare_queue where id in
           (select id from public.bench_bare_queue order by id limit $1 for update skip locked)
         returning tag`,
        [BATCH],
      );
      if (!rows.length) break;
      await pool.query("select pg_notify('steward_bench', p) from unnest($1::text[]) p", [
        notifyPayloads(rows.map((row) => row.tag)),
      ]);
      delivered += rows.length;
    }
    return { value: delivered / ((performance.now() - began) / 1000), detail: { delivered } };
  },
  async teardown(_state, { pool }) {
    await pool.query("drop table if exists public.bench_bare_queue");
    await pool.query("delete from steward.invalidations");
  },
});
