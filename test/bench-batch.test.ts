import { describe, expect, it } from "vitest";
import { batchVsCopy } from "../bench/batch-vs-copy.ts";
import { batchVsRows } from "../bench/batch-vs-rows.ts";
import { runScenario } from "../bench/run.ts";
import type { BenchContext } from "../bench/scenario.ts";
import { testLogger, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

// The scenarios' figures are only meaningful if each side really inserted its rows.
describe("the batch insert bench scenarios", () => {
  const bench = (): BenchContext => ({ url: context.db.url, pool: context.db.pool, quick: true, logger: testLogger() });

  it("batch_vs_copy inserts the same 10,000 rows on both sides", async () => {
    const result = await runScenario(batchVsCopy, bench(), 1);
    expect(result.detail).toMatchObject({ ours: { rows: 10_000 }, baseline: { rows: 10_000 } });
    const contents = async () =>
      (
        await context.db.pool.query(
          "select user_id, kind, amount, created_at, note from public.bench_batch_copy order by id",
        )
      ).rows;
    const state = await batchVsCopy.setup(bench());
    try {
      await batchVsCopy.ours(state, bench());
      const ours = await contents();
      await batchVsCopy.baseline(state, bench());
      const copied = await contents();
      expect(copied).toHaveLength(10_000);
      expect(copied).toEqual(ours);
      expect(copied[1000].note).toBe("note 1000\ta\\b\nc");
    } finally {
      await batchVsCopy.teardown!(state, bench());
    }
  });

  it("batch_vs_rows inserts row by row, and reports the one-transaction case too", async () => {
    const result = await runScenario(batchVsRows, bench(), 1);
    expect(result.detail).toMatchObject({
      ours: { rows: 10_000 },
      baseline: { rows: 400, oneTransactionRows: 2_000, oneTransactionRowsPerSecond: expect.any(Number) },
    });
    const { rows } = await context.db.pool.query("select to_regclass('public.bench_batch_rows') as table");
    expect(rows[0].table).toBeNull();
  });
});
