// Recalculation runs: starting (or joining) one, running one batch, following a run to its end.
// The SQL (steward.start_recalculation, steward.compute_recalc_batch) keeps the guarantees; this
// file calls it and shows progress.
import type pg from "pg";
import { withTransaction } from "../database.ts";
import { formatDuration } from "../duration.ts";
import { isPermanentDatabaseError, PermanentError, permanentIfHopeless, StewardError } from "../errors.ts";

export type RunStatus = "running" | "completed" | "failed" | "cancelled";

export interface RecalcRun {
  id: number;
  name: string;
  status: RunStatus;
  scope: "all" | "keys";
  keysTotal: number;
  keysDone: number;
  keysFailed: number;
  batchesTotal: number;
  batchesDone: number;
  batchesFailed: number;
  startedAt: Date;
  finishedAt: Date | null;
  /** Seconds from the start to the end, or to now while running (server clock). */
  elapsedSeconds: number;
  error: string | null;
}

const RUN_COLUMNS = `
  r.id::float8 as id, r.name, r.status, r.scope, r.keys_total, r.keys_done, r.keys_failed, r.batches_total,
  r.batches_done, r.batches_failed, r.started_at, r.finished_at, r.error, r.elapsed_seconds`;

type RunRow = {
  id: number;
  name: string;
  status: RunStatus;
  scope: "all" | "keys";
  keys_total: number;
  keys_done: number;
  keys_failed: number;
  batches_total: number;
  batches_done: number;
  batches_failed: number;
  started_at: Date;
  finished_at: Date | null;
  error: string | null;
  elapsed_seconds: number;
};

function toRun(row: RunRow): RecalcRun {
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    scope: row.scope,
    keysTotal: row.keys_total,
    keysDone: row.keys_done,
    keysFailed: row.keys_failed,
    batchesTotal: row.batches_total,
    batchesDone: row.batches_done,
    batchesFailed: row.batches_failed,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    elapsedSeconds: row.elapsed_seconds,
    error: row.error,
  };
}

export async function readRun(pool: pg.Pool, id: number): Promise<RecalcRun | undefined> {
  const { rows } = await pool.query<RunRow>(
    `select ${RUN_COLUMNS} from steward.recalc_run_progress r where r.id = $1`,
    [id],
  );
  return rows[0] && toRun(rows[0]);
}

/** The unfinished run of `name`, else its latest one. */
export async function currentRun(pool: pg.Pool, name: string): Promise<RecalcRun | undefined> {
  const { rows } = await pool.query<RunRow>(
    `select ${RUN_COLUMNS} from steward.recalc_run_progress r
      where r.id = (select s.current_run_id from steward.recalculation_status s where s.name = $1)`,
    [name],
  );
  return rows[0] && toRun(rows[0]);
}

export async function recalculationNames(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ name: string }>("select name from steward.recalculation_status order by name");
  return rows.map((row) => row.name);
}

export interface Started {
  run: RecalcRun;
  /** True when a run in progress for the same keys was joined instead of a new one started. */
  joined: boolean;
}

/** Starts a run over every key (`keys` undefined) or the given keys, or joins the one in progress. */
export async function startRecalculation(pool: pg.Pool, name: string, keys?: unknown[]): Promise<Started> {
  const { rows } = await pool.query<{ run_id: string; joined: boolean }>(
    "select run_id, joined from steward.start_recalculation($1, $2::jsonb)",
    [name, keys === undefined ? null : JSON.stringify(keys)],
  );
  const run = await readRun(pool, Number(rows[0]!.run_id));
  return { run: run!, joined: rows[0]!.joined };
}

/** compute raised: this attempt of the batch failed (on the job's last attempt, the batch too). */
export class RecalcBatchError extends StewardError {
  constructor(message: string) {
    super("RECALC_BATCH", message);
  }
}

export interface BatchOutcome {
  outcome: "done" | "skipped" | "retry" | "failed";
  keys: number;
  /** The run's new status when this batch ended it. */
  runStatus: RunStatus | null;
  error: string | null;
}

/**
 * Runs one batch in one transaction under `recalculation.batch_timeout`: compute(keys) and the
 * batch's completion commit together. Unknown run or batch: PermanentError. When the call itself
 * fails (timeout, lost connection), the failed attempt is recorded separately and the error thrown.
 */
export async function computeBatch(
  pool: pg.Pool,
  run: number,
  batch: number,
  finalAttempt: boolean,
): Promise<BatchOutcome> {
  try {
    return await withTransaction(pool, async (client) => {
      await client.query(
        `select set_config('statement_timeout',
           (extract(epoch from steward.setting_interval('recalculation.batch_timeout')) * 1000)::bigint::text, true)`,
      );
      const { rows } = await client.query<{
        outcome: BatchOutcome["outcome"];
        keys: number;
        run_status: RunStatus | null;
        error: string | null;
      }>("select outcome, keys, run_status, error from steward.compute_recalc_batch($1, $2, $3)", [
        run,
        batch,
        finalAttempt,
      ]);
      const row = rows[0]!;
      return { outcome: row.outcome, keys: row.keys, runStatus: row.run_status, error: row.error };
    });
  } catch (error) {
    if (isPermanentDatabaseError(error)) throw permanentIfHopeless("recalculate_batch", error);
    await pool
      .query("select steward.fail_recalc_batch($1, $2, $3, $4)", [run, batch, (error as Error).message, finalAttempt])
      .catch(() => undefined);
    throw error;
  }
}

export interface FailedBatch {
  batch: number;
  keys: number;
  attempts: number;
  error: string | null;
}

export async function failedBatches(pool: pg.Pool, run: number, max = 5): Promise<FailedBatch[]> {
  const { rows } = await pool.query<FailedBatch>(
    "select batch, key_count as keys, attempts, last_error as error from steward.recalc_failed_batches($1, $2)",
    [run, max],
  );
  return rows;
}

/** Whether any batch job of the run is being worked on right now. */
export async function hasRunningBatch(pool: pg.Pool, run: number): Promise<boolean> {
  const { rows } = await pool.query<{ busy: boolean }>("select steward.recalc_run_is_busy($1) as busy", [run]);
  return rows[0]!.busy;
}

const number = (value: number) => Math.round(value).toLocaleString("en-US");

const duration = (seconds: number) => formatDuration(seconds * 1000);

/** Keys computed per second so far (0 before the first batch). */
function keysPerSecond(run: RecalcRun): number {
  return run.elapsedSeconds > 0 ? run.keysDone / run.elapsedSeconds : 0;
}

/** One line of progress without the bar: for logs and pipes. */
export function progressText(run: RecalcRun): string {
  const settled = run.batchesDone + run.batchesFailed;
  const percent = run.batchesTotal ? Math.floor((100 * settled) / run.batchesTotal) : 100;
  const rate = keysPerSecond(run);
  const parts = [
    `${percent}%`,
    `${number(run.keysDone)}/${number(run.keysTotal)} keys`,
    `${number(settled)}/${number(run.batchesTotal)} batches`,
  ];
  if (run.batchesFailed) parts.push(`${number(run.batchesFailed)} failed`);
  if (rate > 0) parts.push(`${number(rate)} keys/s`);
  if (run.status === "running" && rate > 0) {
    const left = run.keysTotal - run.keysDone - run.keysFailed;
    parts.push(`eta ${duration(left / rate)}`);
  } else {
    parts.push(duration(run.elapsedSeconds));
  }
  return parts.join("  ");
}

/** The progress bar for a terminal: `[████░░░░] 52%  13,000/25,000 keys  …`. */
export function progressBar(run: RecalcRun, width = 24): string {
  const settled = run.batchesDone + run.batchesFailed;
  const filled = run.batchesTotal ? Math.floor((width * settled) / run.batchesTotal) : width;
  return `[${"█".repeat(filled)}${"░".repeat(width - filled)}] ${progressText(run)}`;
}

/** The closing line of a run. */
export function runSummary(run: RecalcRun): string {
  const head = `run ${run.id} of ${run.name} ${run.status}`;
  const body = `${number(run.keysDone)} of ${number(run.keysTotal)} keys in ${number(run.batchesDone)} of ${number(
    run.batchesTotal,
  )} batches, ${duration(run.elapsedSeconds)}`;
  const rate = keysPerSecond(run);
  return `${head}: ${body}${rate > 0 ? ` (${number(rate)} keys/s)` : ""}${run.error ? `\n${run.error}` : ""}`;
}

export interface FollowOptions {
  intervalMs: number;
  timeoutMs?: number;
  onProgress(run: RecalcRun): void;
}

/** Polls the run until it ends (returned) or `timeoutMs` passes (the last state returned). */
export async function followRun(pool: pg.Pool, id: number, options: FollowOptions): Promise<RecalcRun> {
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  for (;;) {
    const run = await readRun(pool, id);
    if (!run) throw new PermanentError(`recalculation run ${id} does not exist`);
    options.onProgress(run);
    if (run.status !== "running" || Date.now() >= deadline) return run;
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs));
  }
}
