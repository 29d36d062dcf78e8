// Job statistics (steward.job_stats): each worker counts attempts in memory and adds them to the
// database every few seconds in one statement, so a busy worker writes a few rows per flush
// rather than one per job. Durations go into a log-scale histogram, which adds up exactly across
// workers and flushes (percentiles would not); the job_stats view reads p95 from it.
import type pg from "pg";
import type { Logger } from "../logger.ts";
import type { AttemptOutcome } from "./task.ts";

const MIN_BUCKET = -24;
const MAX_BUCKET = 110;

/**
 * The histogram bucket of a duration: bucket b holds 2^(b/4) to 2^((b+1)/4) ms, so each is 19 %
 * wide and its middle is within 9 % of any value in it. Clamped to 1/64 ms .. about 2 days.
 */
export function durationBucket(ms: number): number {
  if (!(ms > 0)) return MIN_BUCKET;
  return Math.min(MAX_BUCKET, Math.max(MIN_BUCKET, Math.floor(4 * Math.log2(ms))));
}

interface DayCounts {
  task: string;
  day: string;
  completed: number;
  failed: number;
  retried: number;
  total_ms: number;
  durations: Map<number, number>;
}

export class JobStats {
  /** Counts of the current UTC day by task, and of earlier days not yet written. */
  private today = new Map<string, DayCounts>();
  private earlier: DayCounts[] = [];
  private day = "";
  private dayEndsAt = 0;
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly logger: Logger,
  ) {}

  record(task: string, outcome: AttemptOutcome, ms: number): void {
    const now = Date.now();
    if (now >= this.dayEndsAt) {
      // Formatting the date per job would cost more than the rest of this method.
      this.day = new Date(now).toISOString().slice(0, 10);
      this.dayEndsAt = (Math.floor(now / 86_400_000) + 1) * 86_400_000;
      this.earlier.push(...this.today.values());
      this.today = new Map();
    }
    let counts = this.today.get(task);
    if (!counts) {
      counts = { task, day: this.day, completed: 0, failed: 0, retried: 0, total_ms: 0, durations: new Map() };
      this.today.set(task, counts);
    }
    counts[outcome]++;
    counts.total_ms += ms;
    const bucket = durationBucket(ms);
    counts.durations.set(bucket, (counts.durations.get(bucket) ?? 0) + 1);
  }

  /** Adds what was counted since the last flush to the database; on failure keeps it for the next. */
  flush(): Promise<void> {
    this.flushing ??= this.write().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async write(): Promise<void> {
    const batch = [...this.earlier, ...this.today.values()];
    if (batch.length === 0) return;
    this.earlier = [];
    this.today = new Map();
    // One row per (task, day): an upsert may not touch a row twice in one statement.
    const rows = new Map<string, ReturnType<typeof toRow>>();
    for (const counts of batch) {
      const key = `${counts.day} ${counts.task}`;
      const row = rows.get(key);
      if (!row) {
        rows.set(key, toRow(counts));
        continue;
      }
      row.completed += counts.completed;
      row.failed += counts.failed;
      row.retried += counts.retried;
      row.total_ms += counts.total_ms;
      for (const [bucket, n] of counts.durations) row.durations[bucket] = (row.durations[bucket] ?? 0) + n;
    }
    try {
      await this.pool.query("select steward.record_job_stats($1::jsonb)", [JSON.stringify([...rows.values()])]);
    } catch (error) {
      this.logger.warn(
        { err: error, rows: rows.size },
        "could not write job statistics; keeping them for the next flush",
      );
      this.earlier.unshift(...batch);
    }
  }
}

function toRow(counts: DayCounts) {
  const { durations, ...row } = counts;
  return { ...row, durations: Object.fromEntries(durations) as Record<number, number> };
}
