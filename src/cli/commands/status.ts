// `steward status [--json]`: what the system is doing, from steward.status(), and the schedules
// the live workers report (steward.worker_schedules()); when none reports them, those this
// environment's configuration gives a worker (built-ins, STEWARD_CRON_*, the crontab).
import { parseCronItems } from "graphile-worker";
import type pg from "pg";
import { TASKS } from "../../../tasks/index.ts";
import { formatDuration } from "../../duration.ts";
import { crontabPath, nextRun, readCrontab } from "../../worker/crontab.ts";
import { planSchedules, schedulesOf } from "../../worker/schedules.ts";
import { textTable, timeCell } from "../text-table.ts";
import { withDatabasePool, type Command } from "../command.ts";

interface Status {
  at: string;
  queues: Array<{
    queue_name: string | null;
    task: string;
    ready: number;
    scheduled: number;
    running: number;
    retrying: number;
    oldest_ready_since: string | null;
  }>;
  running: Array<{
    id: number;
    task: string;
    locked_by: string;
    locked_at: string;
    attempts: number;
    max_attempts: number;
    host: string | null;
    pid: number | null;
  }>;
  workers: Array<{
    pool_id: string;
    host: string | null;
    pid: number | null;
    started_at: string;
    heartbeat_at: string;
    alive: boolean;
    tasks: string[];
  }>;
  unserved: Array<{ task: string; jobs: number; oldest_run_at: string }>;
  dead_letters: Array<{ source: string; task: string; count: number; last_failed_at: string }>;
  invalidations: { pending: number; due: number; claimed: number; oldest_age_seconds: number | null };
  views: Array<{
    view: string;
    is_present: boolean;
    is_populated: boolean | null;
    refresh_every: string | null;
    last_refreshed_at: string | null;
    staleness_seconds: number;
    last_status: string | null;
    last_error: string | null;
  }>;
  /** At most 50: open and half-open first, then the worker's own, then the most recently active. */
  circuits: Array<{
    name: string;
    state: string;
    consecutive_failures: number;
    opened_at: string | null;
    last_error: string | null;
  }>;
  circuit_totals: {
    total: number;
    by_state: Record<string, number>;
    capacity: { circuits: number; max_circuits: number };
  };
  /** Of the last hour, estimated from hourly counts; at most 10 of each. */
  rate_limit_denials: {
    policies: Array<{ policy: string; denials: number; by_window: Record<string, number> }>;
    keys: Array<{ policy: string; key: string; denials: number }>;
  };
  last_vacuum: { at: string | null; tables: number };
  recalculations: Array<{
    name: string;
    run: number;
    status: string;
    keys_total: number;
    keys_done: number;
    batches_failed: number;
  }>;
}

/** An age in seconds as a person reads it at a glance; "-" when there is none. */
function age(seconds: number | null | undefined): string {
  return seconds === null || seconds === undefined ? "-" : formatDuration(seconds * 1000);
}

function since(at: string | null, now: number): string {
  return at ? age((now - Date.parse(at)) / 1000) : "-";
}

/** A schedule as `steward status` shows it. */
interface ScheduleRow {
  identifier: string;
  task: string;
  pattern: string;
  payload: Record<string, unknown> | null;
  source: string;
  next_run: string | null;
}

/** Where the schedules shown come from: the live workers, or this environment. */
interface ScheduleOrigin {
  from: "workers" | "environment";
  /** Live workers, and how many of them report their schedules. */
  alive: number;
  reporting: number;
}

/** The schedules the live workers report, with their next run; none when no live worker reports. */
async function reportedSchedules(pool: pg.Pool, now: Date): Promise<{ rows: ScheduleRow[]; origin: ScheduleOrigin }> {
  const { rows: fleet } = await pool.query<{ alive: number; reporting: number }>(
    `select count(*) filter (where w.is_alive)::int as alive,
            count(*) filter (where w.is_alive and w.schedules is not null)::int as reporting
       from steward.worker_status w`,
  );
  const { alive, reporting } = fleet[0]!;
  // Nulls where a worker (of another version, or a bug) reported an incomplete schedule.
  const { rows } = await pool.query<{
    identifier: string | null;
    task: string | null;
    pattern: string | null;
    payload: Record<string, unknown> | null;
    source: string | null;
  }>("select identifier, task, pattern, payload, source from steward.worker_schedules()");
  return {
    origin: { from: "workers", alive, reporting },
    rows: rows.map((row) => {
      const schedule = {
        identifier: row.identifier ?? "?",
        task: row.task ?? "?",
        pattern: row.pattern ?? "?",
        payload: row.payload,
        source: row.source ?? "?",
      };
      let next: Date | undefined;
      try {
        const [item] = parseCronItems([
          { task: schedule.task, match: schedule.pattern, identifier: schedule.identifier },
        ]);
        next = item ? nextRun(item, now) : undefined;
      } catch {
        // A pattern this version cannot read (a worker of another version): no next run shown.
      }
      return { ...schedule, next_run: next?.toISOString() ?? null };
    }),
  };
}

async function scheduleRows(config: Parameters<typeof readCrontab>[0], now: Date): Promise<ScheduleRow[]> {
  const planned = planSchedules(schedulesOf(TASKS), await readCrontab(config), crontabPath(config));
  return planned.map((schedule) => ({
    identifier: schedule.identifier,
    task: schedule.task,
    pattern: schedule.pattern,
    payload: schedule.payload,
    source: schedule.source,
    next_run: nextRun(schedule.item, now)?.toISOString() ?? null,
  }));
}

function scheduleHeading(origin: ScheduleOrigin): string {
  if (origin.from === "environment") {
    return origin.alive
      ? `Schedules (of a worker started with this environment: the ${origin.alive} live worker(s) do not report theirs)`
      : "Schedules (of a worker started with this environment: no worker is alive)";
  }
  const older = origin.alive - origin.reporting;
  return `Schedules (reported by ${origin.reporting} live worker(s)${older ? `; ${older} of an older version report none` : ""})`;
}

function formatSchedules(schedules: ScheduleRow[], origin: ScheduleOrigin, now: number): string[] {
  const until = (at: string | null) =>
    at ? `in ${age((Date.parse(at) - now) / 1000)} (${timeCell(new Date(at))})` : "-";
  return [
    scheduleHeading(origin),
    ...(schedules.length
      ? textTable(
          [
            ["identifier", "pattern", "task", "next run", "from"],
            ...schedules.map((s) => [
              s.identifier,
              s.pattern,
              s.task + (s.payload && Object.keys(s.payload).length ? ` ${JSON.stringify(s.payload)}` : ""),
              until(s.next_run),
              s.source,
            ]),
          ],
          { indent: "  " },
        )
      : ["  none"]),
  ];
}

function formatStatus(status: Status): string {
  const now = Date.parse(status.at);
  const lines: string[] = [];
  lines.push("Queues");
  lines.push(
    ...(status.queues.length
      ? textTable(
          [
            ["queue", "task", "ready", "scheduled", "running", "retrying", "oldest ready"],
            ...status.queues.map((q) => [
              q.queue_name ?? "-",
              q.task,
              String(q.ready),
              String(q.scheduled),
              String(q.running),
              String(q.retrying),
              since(q.oldest_ready_since, now),
            ]),
          ],
          { indent: "  ", numeric: [2, 3, 4, 5] },
        )
      : ["  empty"]),
  );
  lines.push("Running jobs");
  lines.push(
    ...(status.running.length
      ? status.running.map(
          (r) =>
            `  #${r.id} ${r.task} on ${r.host ? `${r.host}:${r.pid}` : r.locked_by}, ${since(r.locked_at, now)}, attempt ${r.attempts}/${r.max_attempts}`,
        )
      : ["  none"]),
  );
  lines.push("Workers");
  lines.push(
    ...(status.workers.length
      ? status.workers.map(
          (w) =>
            `  ${w.host ?? "?"}:${w.pid ?? "?"} (${w.pool_id}) ${w.alive ? "alive" : "NOT BEATING"}, last beat ${since(w.heartbeat_at, now)} ago, up ${since(w.started_at, now)}, ${w.tasks.length} tasks`,
        )
      : ["  none running"]),
  );
  if (status.unserved.length) {
    lines.push("Jobs no live worker runs (they wait until a worker with the task starts)");
    lines.push(
      ...status.unserved.map((u) => `  ${u.task}: ${u.jobs} due, the oldest for ${since(u.oldest_run_at, now)}`),
    );
  }
  lines.push("Dead letters (not replayed)");
  lines.push(
    ...(status.dead_letters.length
      ? status.dead_letters.map((d) => `  ${d.source} ${d.task}: ${d.count}, last ${since(d.last_failed_at, now)} ago`)
      : ["  none"]),
  );
  const inv = status.invalidations;
  lines.push(
    `Invalidations: ${inv.pending} pending (${inv.due} due, ${inv.claimed} being delivered), oldest ${age(inv.oldest_age_seconds)}`,
  );
  lines.push("Materialized views");
  lines.push(
    ...(status.views.length
      ? status.views.map((v) =>
          !v.is_present
            ? `  ${v.view}: registered but missing`
            : `  ${v.view}: ${v.last_status ?? "never refreshed"}, data ${age(v.staleness_seconds)} old${v.refresh_every ? `, every ${v.refresh_every}` : ""}${v.last_error ? ` (${v.last_error})` : ""}`,
        )
      : ["  none registered"]),
  );
  const totals = status.circuit_totals;
  const states = Object.entries(totals.by_state)
    .filter(([state]) => state !== "closed")
    .map(([state, count]) => `${count} ${state.replace("_", "-")}`);
  lines.push(
    `Circuits: ${totals.total}${states.length ? ` (${states.join(", ")})` : ""}; ${totals.capacity.circuits} of at most ${totals.capacity.max_circuits} hold state` +
      (status.circuits.length < totals.total ? `; the first ${status.circuits.length}:` : ""),
  );
  lines.push(
    ...(status.circuits.length
      ? status.circuits.map(
          (c) =>
            `  ${c.name}: ${c.state}${c.consecutive_failures ? `, ${c.consecutive_failures} failures in a row` : ""}${c.last_error && c.state !== "closed" ? ` (${c.last_error})` : ""}`,
        )
      : ["  none"]),
  );
  const denials = status.rate_limit_denials;
  lines.push("Rate-limit denials in the last hour");
  lines.push(
    ...(denials.policies.length
      ? [
          ...textTable(
            [
              ["policy", "denied", "by window"],
              ...denials.policies.map((p) => [
                p.policy,
                String(p.denials),
                Object.entries(p.by_window)
                  .map(([name, count]) => `${name}: ${count}`)
                  .join(", "),
              ]),
            ],
            { indent: "  ", numeric: [1] },
          ),
          ...textTable(
            [["key", "policy", "denied"], ...denials.keys.map((k) => [k.key, k.policy, String(k.denials)])],
            { indent: "  ", numeric: [2] },
          ),
        ]
      : ["  none"]),
  );
  lines.push(
    `Last vacuum: ${status.last_vacuum.at ? `${since(status.last_vacuum.at, now)} ago, ${status.last_vacuum.tables} table(s) in the last day` : "never"}`,
  );
  lines.push("Recalculations");
  lines.push(
    ...(status.recalculations.length
      ? status.recalculations.map(
          (r) =>
            `  ${r.name}: run ${r.run} ${r.status}, ${r.keys_done}/${r.keys_total} keys${r.batches_failed ? `, ${r.batches_failed} batches failed` : ""}`,
        )
      : ["  none"]),
  );
  return lines.join("\n");
}

export const statusCommand: Command = {
  name: "status",
  usage: "status [--json]\n  --json  print steward.status() as JSON",
  options: { json: { type: "boolean" } },
  positionals: [0, 0],
  async run(_positionals, values, context) {
    return withDatabasePool(context, async (pool) => {
      const { rows } = await pool.query<{ status: Status }>("select steward.status() as status");
      const status = rows[0]!.status;
      const at = new Date(status.at);
      const reported = await reportedSchedules(pool, at);
      const { rows: schedules, origin } = reported.origin.reporting
        ? reported
        : {
            rows: await scheduleRows(context.config, at),
            origin: { ...reported.origin, from: "environment" as const },
          };
      context.print(
        values.json
          ? JSON.stringify({ ...status, schedules, schedules_from: origin.from }, null, 2)
          : `${formatStatus(status)}\n${formatSchedules(schedules, origin, at.getTime()).join("\n")}`,
      );
      return 0;
    });
  },
};
