// steward.batch_insert of 10,000 rows in one call against one INSERT per row, each its own
// statement and transaction: what a client that cannot hold a transaction across calls (one RPC
// per row through PostgREST, an edge function) or a plain `for … await pool.query(insert)` loop
// does. The unit is rows per second, so the slow side inserts fewer rows (2,000; --quick: 400).
// The detail also reports the best case for row-at-a-time, a prepared INSERT per row inside one
// transaction, which only pays a round trip per row.
import { withTransaction } from "../src/database.ts";
import { BATCH_COLUMNS, BATCH_ROWS, batchInsertSide, type BatchRow } from "./batch-data.ts";
import { defineScenario, timed } from "./scenario.ts";

const TABLE = "public.bench_batch_rows";
const INSERT = `insert into ${TABLE} (${BATCH_COLUMNS.join(", ")}) values ($1, $2, $3, $4, $5)`;

export const batchVsRows = defineScenario<{ rows: BatchRow[] }>({
  name: "batch_vs_rows",
  unit: "rows/s",
  higherIsBetter: true,
  description: `${BATCH_ROWS.toLocaleString("en-US")} rows: steward.batch_insert in one call vs one INSERT per row, each its own transaction`,
  ...batchInsertSide(TABLE),
  async baseline({ rows }, { pool, quick }) {
    await pool.query(`truncate ${TABLE}`);
    const perStatement = rows.slice(0, quick ? 400 : 2_000);
    const ms = await timed(async () => {
      for (const row of perStatement)
        await pool.query(
          INSERT,
          BATCH_COLUMNS.map((column) => row[column]),
        );
    });
    const inTransaction = rows.slice(0, quick ? 2_000 : BATCH_ROWS);
    const transactionMs = await timed(() =>
      withTransaction(pool, async (client) => {
        for (const row of inTransaction) {
          await client.query({
            name: "bench_insert_row",
            text: INSERT,
            values: BATCH_COLUMNS.map((column) => row[column]),
          });
        }
      }),
    );
    return {
      value: perStatement.length / (ms / 1000),
      detail: {
        rows: perStatement.length,
        ms,
        oneTransactionRows: inTransaction.length,
        oneTransactionRowsPerSecond: Math.round(inTransaction.length / (transactionMs / 1000)),
      },
    };
  },
});
