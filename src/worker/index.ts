// Running a steward worker in-process: the future `pg-steward/worker` package entry.
export { startWorker } from "./runner.ts";
export type { RunningWorker, WorkerOptions } from "./runner.ts";
export { defineTask } from "./task.ts";
export type { TaskContext, TaskDefinition } from "./task.ts";
export { PermanentError } from "../errors.ts";
