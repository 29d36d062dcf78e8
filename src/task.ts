// How a task is written: parse the payload (throwing PermanentError on a bad one), call SQL,
// return a summary. The wrapper logs one line per attempt with the outcome and duration.
import type { Job, JobHelpers, Task, TaskList } from "graphile-worker";
import type pg from "pg";
import type { Config } from "./config.ts";
import type { Logger } from "./logger.ts";

export interface TaskContext {
  logger: Logger;
  config: Config;
  /** The worker's pool: for statements that must run outside a transaction (VACUUM) or on one client. */
  pool: pg.Pool;
  /** Runs one statement on the worker's pool. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  job: Job;
  helpers: JobHelpers;
  /** Aborted when the worker is shutting down; long tasks should stop at the next safe point. */
  signal: AbortSignal | undefined;
}

export interface TaskDefinition<P = unknown> {
  identifier: string;
  description: string;
  /** The default cron schedule, if the task runs on one (overridable by STEWARD_CRON_<TASK>). */
  schedule?: { pattern: string; description: string; payload?: Record<string, unknown> };
  /** Checks the payload; throws PermanentError naming what is wrong. */
  parse(payload: unknown): P;
  /** Does the work; the returned object is logged with the outcome. */
  run(payload: P, context: TaskContext): Promise<object | void>;
}

export function defineTask<P>(definition: TaskDefinition<P>): TaskDefinition<P> {
  return definition;
}

/** graphile-worker's task list for these definitions, logging through `logger`. */
export function buildTaskList(
  definitions: TaskDefinition<unknown>[],
  logger: Logger,
  pool: pg.Pool,
  config: Config,
): TaskList {
  const list: TaskList = {};
  for (const definition of definitions) {
    const task: Task = async (payload, helpers) => {
      const log = logger.child({ task: definition.identifier, job: helpers.job.id, attempt: helpers.job.attempts });
      const began = performance.now();
      try {
        const parsed = definition.parse(payload);
        const summary = await definition.run(parsed, {
          logger: log,
          config,
          pool,
          query: (text, values) => pool.query(text, values),
          job: helpers.job,
          helpers,
          signal: helpers.abortSignal,
        });
        log.info({ ...summary, ms: Math.round(performance.now() - began) }, `${definition.identifier} done`);
      } catch (error) {
        log.warn(
          { err: error, ms: Math.round(performance.now() - began), maxAttempts: helpers.job.max_attempts },
          `${definition.identifier} failed`,
        );
        throw error;
      }
    };
    list[definition.identifier] = task;
  }
  return list;
}
