// Every task the worker runs, by graphile-worker task identifier. One file per task, named
// after its identifier; add new ones to this list.
import type { TaskDefinition } from "../src/worker/task.ts";
import { cleanupTask } from "./cleanup.ts";
import { drainInvalidations } from "./drain_invalidations.ts";
import { recalculate } from "./recalculate.ts";
import { recalculateBatch } from "./recalculate_batch.ts";
import { refreshMaterializedViewTask } from "./refresh_materialized_view.ts";
import { rollupRequests } from "./rollup_requests.ts";
import { scheduleRefreshesTask } from "./schedule_refreshes.ts";
import { vacuumTablesTask } from "./vacuum_tables.ts";

export const TASKS: TaskDefinition<unknown>[] = [
  refreshMaterializedViewTask,
  scheduleRefreshesTask,
  drainInvalidations,
  vacuumTablesTask,
  cleanupTask,
  rollupRequests,
  recalculate,
  recalculateBatch,
] as TaskDefinition<unknown>[];

export const TASK_NAMES: string[] = TASKS.map((task) => task.identifier);
