// How a task is written: parse the payload (throwing PermanentError on a bad one), call SQL,
// return a summary. The wrapper logs one line per attempt with the outcome and duration.
import type { Job, JobHelpers, Task, TaskList } from "graphile-worker";
import type pg from "pg";
import type { Config } from "../config.ts";
import { failJobPermanently } from "./dead-letters.ts";
import { isPermanentError } from "../errors.ts";
import type { Logger } from "../logger.ts";

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

/**
 * A task module's definition: a team's task file exports one (its file name is the identifier,
 * so `identifier` may be left out; without `parse` the payload is passed on unchecked).
 */
export interface TaskSpec<P = unknown> {
  identifier?: string;
  description?: string;
  parse?(payload: unknown): P;
  run(payload: P, context: TaskContext): Promise<object | void>;
}

/** A task with payload checking; `run` gets what `parse` returned. */
export function defineTask<P>(definition: TaskDefinition<P>): TaskDefinition<P>;
export function defineTask<P>(definition: TaskSpec<P>): TaskSpec<P>;
export function defineTask<P>(definition: TaskSpec<P>): TaskSpec<P> {
  return definition;
}

/** What became of one attempt: the outcome labels of steward.job_stats and steward_jobs_total. */
export type AttemptOutcome = "completed" | "retried" | "failed";

/** Told of every finished attempt, with its duration in milliseconds. */
export type OutcomeObserver = (task: string, outcome: AttemptOutcome, ms: number) => void;

/** What a task's run() is handed for one attempt. A class, so an attempt allocates no closures. */
class Attempt implements TaskContext {
  private child: Logger | undefined;
  constructor(
    private readonly parent: Logger,
    private readonly identifier: string,
    readonly config: Config,
    readonly pool: pg.Pool,
    /** Shared by every attempt, so destructuring `{ query }` works without a closure per job. */
    readonly query: TaskContext["query"],
    readonly helpers: JobHelpers,
  ) {}
  /** Made when first used: a logger per job costs as much as a no-op job's own bookkeeping. */
  get logger(): Logger {
    return (this.child ??= this.parent.child({ task: this.identifier, job: this.job.id, attempt: this.job.attempts }));
  }
  get job(): Job {
    return this.helpers.job;
  }
  get signal(): AbortSignal | undefined {
    return this.helpers.abortSignal;
  }
}

/**
 * graphile-worker's task list for these definitions, logging through `logger`. Outcomes are
 * counted here rather than from graphile-worker's events: the wrapper knows them already, and
 * the no-op throughput of the `jobs` benchmark shows every microsecond spent per job.
 */
export function buildTaskList(
  definitions: TaskDefinition<unknown>[],
  logger: Logger,
  pool: pg.Pool,
  config: Config,
  observe: OutcomeObserver = () => {},
): TaskList {
  const list: TaskList = {};
  const query: TaskContext["query"] = (text, values) => pool.query(text, values);
  for (const definition of definitions) {
    const { identifier } = definition;
    const task: Task = async (payload, helpers) => {
      const attempt = new Attempt(logger, identifier, config, pool, query, helpers);
      const { job } = helpers;
      const began = performance.now();
      try {
        const summary = await definition.run(definition.parse(payload), attempt);
        const ms = performance.now() - began;
        observe(identifier, "completed", ms);
        if (logger.isLevelEnabled("info"))
          attempt.logger.info({ ...summary, ms: Math.round(ms) }, `${identifier} done`);
      } catch (error) {
        if (isPermanentError(error)) {
          // Retrying cannot help: this attempt is the last, and its failure moves the job to
          // the dead letters. If that cannot be recorded, the job retries as usual.
          let final = false;
          try {
            final = await failJobPermanently(pool, job, error.message);
          } catch (cause) {
            attempt.logger.error({ err: cause }, "could not mark the job's error as permanent; it will be retried");
          }
          attempt.logger.warn(
            { err: error, ms: Math.round(performance.now() - began), permanent: final },
            `${identifier} failed permanently`,
          );
        } else {
          attempt.logger.warn(
            { err: error, ms: Math.round(performance.now() - began), maxAttempts: job.max_attempts },
            `${identifier} failed`,
          );
        }
        // The test graphile-worker makes to report the attempt as the last (job:failed).
        observe(identifier, job.attempts >= job.max_attempts ? "failed" : "retried", performance.now() - began);
        throw error;
      }
    };
    list[identifier] = task;
  }
  return list;
}
