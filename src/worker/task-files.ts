// A team's own tasks: every module in its task directories, graphile-worker's convention (the
// file name is the task identifier), so adding a task is adding a file. Each becomes a
// TaskDefinition and gets what the built-ins get (dead letters, statistics, a log line, metrics).
import { existsSync, realpathSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { Task } from "graphile-worker";
import type { Config } from "../config.ts";
import { ConfigError } from "../errors.ts";
import { PACKAGE_ROOT } from "../package-root.ts";
import { TASK_NAMES, TASKS } from "../../tasks/index.ts";
import type { TaskDefinition, TaskSpec } from "./task.ts";

/** Extensions loaded as task modules. TypeScript is run by Node's own type stripping (docs/dba-workflow.md, "Your own tasks and schedules"). */
const MODULE_EXTENSIONS = [".js", ".mjs", ".cjs", ".ts", ".mts", ".cts"];

/** What graphile-worker's crontab accepts as a task name, minus `/` and `:` (no subdirectories, `steward:` is ours). */
const IDENTIFIER = /^[_a-zA-Z][_a-zA-Z0-9-]*$/;

/** A module that cannot be used: the worker stops with exit 2 naming the file. */
export class TaskFileError extends ConfigError {
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`task file ${file}: ${message}`);
    if (options?.cause) this.cause = options.cause;
  }
}

function isDeclarationFile(name: string): boolean {
  return /\.d\.[mc]?ts$/.test(name);
}

/** The task modules of one directory, by identifier (not recursive: subdirectories hold helpers). */
async function moduleFiles(directory: string): Promise<Array<{ identifier: string; file: string }>> {
  const entries = await fs.readdir(directory, { withFileTypes: true });
  return entries
    .filter(
      (entry) =>
        entry.isFile() &&
        !entry.name.startsWith(".") &&
        !isDeclarationFile(entry.name) &&
        MODULE_EXTENSIONS.includes(path.extname(entry.name)),
    )
    .map((entry) => ({
      identifier: path.basename(entry.name, path.extname(entry.name)),
      file: path.join(directory, entry.name),
    }))
    .sort((a, b) => a.file.localeCompare(b.file));
}

function isTaskSpec(value: unknown): value is TaskSpec<unknown> {
  return typeof value === "object" && value !== null && typeof (value as TaskSpec).run === "function";
}

/** The module's task: `export default` (graphile-worker's convention) or `export const task`. */
function taskOf(file: string, identifier: string, module: Record<string, unknown>): TaskDefinition<unknown> {
  const exported = module.default ?? module.task;
  if (typeof exported === "function") {
    const task = exported as Task;
    return {
      identifier,
      description: path.basename(file),
      parse: (payload) => payload,
      async run(payload, context) {
        await task(payload, context.helpers);
      },
    };
  }
  if (isTaskSpec(exported)) {
    if (exported.identifier !== undefined && exported.identifier !== identifier) {
      throw new TaskFileError(
        file,
        `defineTask names the task "${exported.identifier}" but the file name makes it "${identifier}"; the file name is the identifier: drop \`identifier\` or rename the file`,
      );
    }
    const spec = exported;
    return {
      identifier,
      description: spec.description ?? path.basename(file),
      parse: spec.parse ? (payload) => spec.parse!(payload) : (payload) => payload,
      run: (payload, context) => spec.run(payload, context),
    };
  }
  throw new TaskFileError(
    file,
    "exports no task: `export default` a graphile-worker task function (payload, helpers) or `defineTask({ parse, run })` from pg-steward/worker",
  );
}

export interface TaskFilesOptions {
  /** Identifiers the team may not reuse (the built-ins). */
  reserved: ReadonlySet<string>;
}

/**
 * Loads every task module of `directories`, in order. A module that fails to import, exports
 * no task, or reuses an identifier (a built-in's or another file's) is a TaskFileError.
 */
export async function loadTaskFiles(
  directories: readonly string[],
  options: TaskFilesOptions,
): Promise<TaskDefinition<unknown>[]> {
  const found = new Map<string, string>();
  const tasks: TaskDefinition<unknown>[] = [];
  for (const directory of directories) {
    let files;
    try {
      files = await moduleFiles(directory);
    } catch (error) {
      throw new ConfigError(`task directory ${directory} cannot be read: ${(error as Error).message}`);
    }
    for (const { identifier, file } of files) {
      if (!IDENTIFIER.test(identifier)) {
        throw new TaskFileError(
          file,
          `"${identifier}" cannot be a task identifier (letters, digits, _ and -, starting with a letter or _); rename the file, or move a helper module into a subdirectory`,
        );
      }
      if (options.reserved.has(identifier)) {
        throw new TaskFileError(
          file,
          `"${identifier}" is a built-in task of pg-steward and cannot be replaced; rename the file (to change the built-in's schedule or payload, give it a line in the crontab)`,
        );
      }
      const other = found.get(identifier);
      if (other) {
        throw new TaskFileError(file, `task "${identifier}" is already defined by ${other}; keep one of the two`);
      }
      let module: Record<string, unknown>;
      try {
        module = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
      } catch (error) {
        throw new TaskFileError(file, `could not be loaded: ${(error as Error).message}`, { cause: error });
      }
      tasks.push(taskOf(file, identifier, module));
      found.set(identifier, file);
    }
  }
  return tasks;
}

/**
 * The team's task directories: STEWARD_TASKS_DIR, else `./tasks` of the working directory when
 * it exists and is not pg-steward's own (a worker started inside a clone of pg-steward).
 */
export function taskDirectories(config: Pick<Config, "tasksDirs">, cwd = process.cwd()): string[] {
  if (config.tasksDirs) return config.tasksDirs;
  const candidate = path.resolve(cwd, "tasks");
  if (!existsSync(candidate)) return [];
  const own = path.join(PACKAGE_ROOT, "tasks");
  return existsSync(own) && realpathSync(candidate) === realpathSync(own) ? [] : [candidate];
}

/** The tasks a worker runs: the built-ins, then the team's (STEWARD_TASKS_DIR). */
export async function loadTasks(config: Pick<Config, "tasksDirs">): Promise<TaskDefinition<unknown>[]> {
  const team = await loadTaskFiles(taskDirectories(config), { reserved: new Set(TASK_NAMES) });
  return [...TASKS, ...team];
}
