// Every task the worker runs, by graphile-worker task identifier. One file per task, named
// after its identifier; add new ones to this list.
import type { TaskDefinition } from "../src/task.ts";
import { drainInvalidations } from "./drain_invalidations.ts";
import { recalculate } from "./recalculate.ts";
import { recalculateBatch } from "./recalculate_batch.ts";

export const TASKS: TaskDefinition<unknown>[] = [drainInvalidations, recalculate, recalculateBatch];

export const TASK_NAMES: string[] = TASKS.map((task) => task.identifier);
