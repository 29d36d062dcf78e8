// VACUUM (ANALYZE, SKIP_LOCKED) outside any transaction, one table at a time within a time
// budget: the tables past the dead-tuple thresholds (queue tables first), or the ones named.
import { vacuumTables } from "../src/worker/vacuum.ts";
import { optionalStringArray, payloadObject } from "../src/worker/payload.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "vacuum_tables";

export const vacuumTablesTask = defineTask<{ tables?: string[] }>({
  identifier: TASK,
  description: 'vacuum the tables with many dead tuples, or {"tables": ["public.orders"]}',
  schedule: { pattern: "0 3 * * 0", description: "weekly, Sunday 03:00 UTC" },
  parse(payload) {
    const tables = optionalStringArray(TASK, payloadObject(TASK, payload, ["tables"]), "tables");
    return tables ? { tables } : {};
  },
  async run({ tables }, { pool, signal, logger }) {
    const summary = await vacuumTables(pool, tables, { signal, logger });
    return {
      planned: summary.planned,
      vacuumed: summary.vacuumed.length,
      skipped: summary.skipped,
      deferred: summary.deferred,
    };
  },
});
