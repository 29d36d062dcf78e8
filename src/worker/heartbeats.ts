// Crash recovery: every worker pool keeps a row of steward.workers fresh, and on each beat also
// sweeps: jobs locked by a pool whose row went stale (its process died, or lost the database for
// longer than the workers.heartbeat_timeout setting) are unlocked for another worker. Without
// this, graphile-worker leaves them locked for 4 hours.
import os from "node:os";
import type pg from "pg";
import type { Logger } from "../logger.ts";

interface ReleasedWorker {
  pool_id: string;
  host: string | null;
  pid: number | null;
  last_heartbeat_at: string;
  released_jobs: number;
}

export interface Heartbeat {
  /** Starts beating for a graphile-worker pool (its id is the locked_by of its jobs); beats at once. */
  add(poolId: string): Promise<void>;
  /** Beats and sweeps now (the timer does it every sixth of the timeout). */
  tick(): Promise<void>;
  /** Stops beating and removes the pools' rows (releasing any job one still holds). */
  stop(): Promise<void>;
}

/** A sixth of the timeout: a live worker misses five beats before it is presumed dead. */
function heartbeatInterval(timeoutMs: number): number {
  return Math.min(10_000, Math.max(100, Math.floor(timeoutMs / 6)));
}

/** A schedule as a worker reports it on its heartbeat (steward.workers.schedules). */
export interface ReportedSchedule {
  identifier: string;
  task: string;
  pattern: string;
  payload: Record<string, unknown> | null;
  source: string;
}

export function startHeartbeat(options: {
  pool: pg.Pool;
  logger: Logger;
  tasks?: string[];
  schedules?: ReportedSchedule[];
}): Heartbeat {
  const { pool } = options;
  // Recorded on every beat: `steward status`, /metrics and verify find jobs no live worker runs,
  // and `steward status` shows the schedules the live workers run.
  const tasks = options.tasks ?? null;
  const schedules = options.schedules ? JSON.stringify(options.schedules) : null;
  const logger = options.logger.child({ component: "heartbeat" });
  const host = os.hostname();
  const poolIds: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  let intervalMs = heartbeatInterval(60_000);
  /** Pools that have beaten once: a later beat that finds no row means they were swept. */
  const seen = new Set<string>();

  async function beat(ids: string[]): Promise<void> {
    const { rows } = await pool.query<{ pool_id: string; existed: boolean }>(
      `select p.pool_id, steward.worker_heartbeat(p.pool_id, $2, $3, $4, $5::jsonb) as existed
         from unnest($1::text[]) as p(pool_id)`,
      [ids, host, process.pid, tasks, schedules],
    );
    for (const row of rows) {
      if (!row.existed && seen.has(row.pool_id)) {
        logger.error(
          { poolId: row.pool_id },
          "this worker was presumed dead (no heartbeat within workers.heartbeat_timeout) and its jobs were released to other workers; it carries on",
        );
      }
      seen.add(row.pool_id);
    }
  }

  async function sweep(): Promise<void> {
    const { rows } = await pool.query<{ timeout_ms: number; released: ReleasedWorker[] }>(
      `select extract(epoch from steward.setting_interval('workers.heartbeat_timeout')) * 1000 as timeout_ms,
              (select coalesce(json_agg(d), '[]') from steward.release_dead_workers() d) as released`,
    );
    intervalMs = heartbeatInterval(Number(rows[0]!.timeout_ms));
    for (const worker of rows[0]!.released) {
      logger.warn(
        {
          poolId: worker.pool_id,
          host: worker.host,
          pid: worker.pid,
          lastHeartbeatAt: worker.last_heartbeat_at,
          releasedJobs: worker.released_jobs,
        },
        "released the jobs of a dead worker",
      );
    }
  }

  function schedule() {
    if (stopped) return;
    timer = setTimeout(() => void tick(), intervalMs);
    timer.unref();
  }

  function tick(): Promise<void> {
    running ??= (async () => {
      try {
        if (poolIds.length) await beat(poolIds);
        await sweep();
      } catch (error) {
        logger.warn({ err: error }, "heartbeat failed; trying again at the next beat");
      } finally {
        running = undefined;
        clearTimeout(timer);
        schedule();
      }
    })();
    return running;
  }

  void tick();
  return {
    async add(poolId) {
      poolIds.push(poolId);
      await beat([poolId]).catch((error: unknown) =>
        logger.warn({ err: error, poolId }, "first heartbeat failed; trying again at the next beat"),
      );
    },
    tick,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      for (const poolId of poolIds) {
        try {
          const { rows } = await pool.query<{ released: string }>("select steward.unregister_worker($1) as released", [
            poolId,
          ]);
          const released = Number(rows[0]?.released ?? 0);
          if (released > 0) logger.warn({ poolId, released }, "released jobs this worker still held");
        } catch (error) {
          logger.warn({ err: error, poolId }, "could not remove the heartbeat row; it goes stale and is swept");
        }
      }
    },
  };
}
