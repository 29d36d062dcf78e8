// 10,000 rows from JavaScript objects into a table: steward.batch_insert (one call with a JSON
// array) against COPY FROM STDIN (pg-copy-streams, the text format), the fastest way in.
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { from as copyFrom } from "pg-copy-streams";
import { BATCH_COLUMNS, BATCH_ROWS, batchInsertSide, type BatchRow } from "./batch-data.ts";
import { defineScenario, timed } from "./scenario.ts";

const TABLE = "public.bench_batch_copy";

/** A value in COPY's text format: backslash, tab, newline and carriage return escaped. */
function copyText(value: string | number): string {
  return String(value).replace(/[\\\t\n\r]/g, (c) => ({ "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" })[c]!);
}

export const batchVsCopy = defineScenario<{ rows: BatchRow[] }>({
  name: "batch_vs_copy",
  unit: "rows/s",
  higherIsBetter: true,
  description: `${BATCH_ROWS.toLocaleString("en-US")} rows into an empty table: steward.batch_insert in one call vs COPY FROM STDIN`,
  ...batchInsertSide(TABLE),
  async baseline({ rows }, { pool }) {
    await pool.query(`truncate ${TABLE}`);
    const client = await pool.connect();
    try {
      const ms = await timed(async () => {
        const text =
          rows.map((row) => BATCH_COLUMNS.map((column) => copyText(row[column])).join("\t")).join("\n") + "\n";
        await pipeline(
          Readable.from([text]),
          client.query(copyFrom(`copy ${TABLE} (${BATCH_COLUMNS.join(", ")}) from stdin`)),
        );
      });
      return { value: rows.length / (ms / 1000), detail: { rows: rows.length, ms } };
    } finally {
      client.release();
    }
  },
});
