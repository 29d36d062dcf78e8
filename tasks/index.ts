// Every task the worker runs, by graphile-worker task identifier. One file per task, named
// after its identifier; add new ones to this list.
import type { TaskDefinition } from "../src/task.ts";
import { rollupRequests } from "./rollup_requests.ts";

export const TASKS: TaskDefinition<unknown>[] = [rollupRequests];

export const TASK_NAMES: string[] = TASKS.map((task) => task.identifier);
