#!/usr/bin/env zx
// Usage: DATABASE_URL=postgres://… npx zx scripts/measure-refresh.mjs [--rows 1000000]
//          [--changed 0.01,0.5] [--rounds 3] [--readers 4] [--keep]
//
// How long a refresh of a materialized view takes concurrently and plainly, and how long
// readers waited meanwhile. In the database given (migrated with `steward migrate`; not a
// production one: it writes a table of --rows rows), it builds measure_refresh_source and the
// materialized view measure_refresh_view over it, then for each fraction in --changed and each
// round: updates that fraction of the source rows, and refreshes the view through
// steward.refresh_materialized_view, concurrently and plainly in turn, while --readers
// connections look up random rows of the view in a loop. Prints, per fraction and mode, the
// median refresh time and the reads that overlapped the refresh: how many, p50, p99 and max
// latency (the max is how long a reader waited). --keep leaves the table and view behind.
import pg from "pg";
import { argv } from "zx";

const url = process.env.DATABASE_URL;
if (!url) {
  console.error("DATABASE_URL must name a migrated database");
  process.exit(2);
}
const rows = Number(argv.rows ?? 1_000_000);
const fractions = String(argv.changed ?? "0.01,0.5")
  .split(",")
  .map(Number);
const rounds = Number(argv.rounds ?? 3);
const readerCount = Number(argv.readers ?? 4);

const pool = new pg.Pool({ connectionString: url, max: 2 });
const q = (text, values) => pool.query(text, values);
const maximum = (values) => values.reduce((max, value) => (value > max ? value : max), 0);
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
};

console.error(`building a ${rows.toLocaleString()}-row source and view…`);
await q("drop materialized view if exists measure_refresh_view");
await q("drop table if exists measure_refresh_source");
await q(
  "create table measure_refresh_source (id int primary key, customer_id int not null, amount numeric not null, note text not null)",
);
await q(
  `insert into measure_refresh_source
   select g, g % 10000, (g % 997) * 1.5, md5(g::text) from generate_series(1, $1) g`,
  [rows],
);
await q(`
  create materialized view measure_refresh_view as
    select id, customer_id, amount, amount * 1.2 as amount_with_tax, upper(note) as note
      from measure_refresh_source`);
await q("create unique index on measure_refresh_view (id)");
await q("vacuum analyze measure_refresh_source");
await q("analyze measure_refresh_view");
await q("select steward.register_materialized_view('measure_refresh_view', concurrently => true)");

const readers = await Promise.all(
  Array.from({ length: readerCount }, async () => {
    const client = new pg.Client({ connectionString: url, application_name: "measure-refresh reader" });
    await client.connect();
    return client;
  }),
);
let stop = false;
let reads = [];
const loops = readers.map(async (client) => {
  while (!stop) {
    const start = performance.now();
    await client.query("select * from measure_refresh_view where id = $1", [1 + Math.floor(Math.random() * rows)]);
    reads.push({ start, end: performance.now() });
  }
});

const results = [];
for (const fraction of fractions) {
  const byMode = { concurrently: [], plainly: [] };
  for (let round = 0; round < rounds; round++) {
    for (const mode of round % 2 ? ["plainly", "concurrently"] : ["concurrently", "plainly"]) {
      await q(
        "update measure_refresh_source set amount = amount + 1 where id in (select id from measure_refresh_source order by random() limit $1)",
        [Math.round(rows * fraction)],
      );
      await q("select steward.register_materialized_view('measure_refresh_view', concurrently => $1)", [
        mode === "concurrently",
      ]);
      reads = [];
      const began = performance.now();
      const { rows: log } = await q(
        "select status, duration_ms, ran_concurrently from steward.refresh_materialized_view('measure_refresh_view') l",
      );
      const ended = performance.now();
      if (log[0].status !== "ok") throw new Error(`refresh ${log[0].status}`);
      const overlapping = reads
        .filter((read) => read.end >= began && read.start <= ended)
        .map((read) => read.end - read.start);
      byMode[mode].push({ refreshMs: log[0].duration_ms, reads: overlapping.length, latencies: overlapping });
      console.error(
        `changed ${fraction * 100}% round ${round + 1} ${mode}: ${Math.round(log[0].duration_ms)} ms, ` +
          `${overlapping.length} reads, max ${Math.round(maximum(overlapping))} ms`,
      );
    }
  }
  for (const [mode, runs] of Object.entries(byMode)) {
    const latencies = runs.flatMap((run) => run.latencies);
    results.push({
      changed: `${fraction * 100}%`,
      mode,
      refresh_ms: Math.round(median(runs.map((run) => run.refreshMs))),
      reads_during: median(runs.map((run) => run.reads)),
      read_p50_ms: Number(percentile(latencies, 50).toFixed(2)),
      read_p99_ms: Number(percentile(latencies, 99).toFixed(1)),
      read_max_ms: Math.round(maximum(latencies)),
    });
  }
}
stop = true;
await Promise.all(loops);
await Promise.all(readers.map((client) => client.end()));
if (!argv.keep) {
  await q("select steward.unregister_materialized_view('measure_refresh_view')");
  await q("drop materialized view measure_refresh_view");
  await q("drop table measure_refresh_source");
}
await pool.end();
console.log(
  `${rows.toLocaleString()} rows, ${readerCount} readers, ${rounds} rounds; ` +
    "refresh and reads overlapping it (medians per round, latencies pooled):",
);
console.table(results);
