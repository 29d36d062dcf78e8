// `pg-steward/worker`: running a steward worker in-process with your own tasks and schedules.
//   startWorker({ url, tasks: [...builtinTasks, myTask], crontab: "0 * * * * my_task" })
export { startWorker } from "./runner.ts";
export type { RunningWorker, WorkerOptions } from "./runner.ts";
export { defineTask } from "./task.ts";
export type { TaskContext, TaskDefinition, TaskSpec } from "./task.ts";
export { loadTaskFiles, TaskFileError } from "./task-files.ts";
export { CrontabError } from "./crontab.ts";
export { PermanentError } from "../errors.ts";
export type { Config } from "../config.ts";
export type { Job, JobHelpers, Task } from "graphile-worker";
/** The built-in tasks (a worker's default list, with the team's modules from STEWARD_TASKS_DIR). */
export { TASKS as builtinTasks } from "../../tasks/index.ts";
