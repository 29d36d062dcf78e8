// Prometheus metrics of one worker process. Job counters come from graphile-worker's events
// (in-process, so a crash loses the last few: metrics only, never state); database gauges are
// read when /metrics is scraped, each from one SQL query listed in DATABASE_GAUGES.
import client from "prom-client";
import type pg from "pg";
import type { Logger } from "./logger.ts";

/**
 * A gauge read from the database on every scrape. The query returns one row per series: a
 * numeric `value` column and one text column per label.
 */
export interface DatabaseGauge {
  name: string;
  help: string;
  labels: string[];
  sql: string;
}

export const DATABASE_GAUGES: DatabaseGauge[] = [
  {
    name: "steward_queue_depth",
    help: "Jobs in graphile-worker's queue by task and state (ready: due and unlocked; scheduled: due later; running: locked).",
    labels: ["task", "state"],
    sql: `
      select task_identifier as task,
             case when locked_at is not null then 'running'
                  when run_at > pg_catalog.now() then 'scheduled'
                  else 'ready' end as state,
             count(*)::float8 as value
        from graphile_worker.jobs
       where attempts < max_attempts or locked_at is not null
       group by 1, 2`,
  },
  {
    name: "steward_materialized_view_staleness_seconds",
    help: "Seconds since the last successful refresh of each registered materialized view began (since its registration when it has none): its data is at most this old.",
    labels: ["view"],
    sql: `
      select view, extract(epoch from pg_catalog.now() - coalesce(last_refreshed_at, registered_at))::float8 as value
        from steward.materialized_views`,
  },
  {
    name: "steward_invalidations_pending",
    help: "Undelivered invalidation entries by state (ready: due and unclaimed; scheduled: debounced or backing off; claimed: being delivered).",
    labels: ["state"],
    sql: `
      select case when claimed_until > pg_catalog.now() then 'claimed'
                  when deliver_at > pg_catalog.now() then 'scheduled'
                  else 'ready' end as state,
             count(*)::float8 as value
        from steward.invalidations
       group by 1`,
  },
  {
    name: "steward_invalidations_oldest_pending_seconds",
    help: "Age of the oldest undelivered invalidation entry (0 when none).",
    labels: [],
    sql: `
      select coalesce(extract(epoch from pg_catalog.now() - min(enqueued_at)), 0)::float8 as value
        from steward.invalidations`,
  },
  {
    name: "steward_request_rollup_pending",
    help: "5-minute request buckets (bucket, endpoint, method) with rows the rollup_requests task has not rolled up yet.",
    labels: [],
    sql: `
      select count(*)::float8 as value
        from (select distinct bucket, endpoint, method from steward.request_rollup_pending) as pending`,
  },
  {
    name: "steward_recalc_keys",
    help: "Keys of recalculation runs in progress, by recalculation and state (done, failed, pending).",
    labels: ["name", "state"],
    sql: `
      select r.name, k.state, k.value::float8 as value
        from steward.recalc_runs r
       cross join lateral (values ('done', r.keys_done), ('failed', r.keys_failed),
                                  ('pending', r.keys_total - r.keys_done - r.keys_failed)) as k(state, value)
       where r.finished_at is null`,
  },
  {
    name: "steward_recalc_last_run_seconds",
    help: "Duration of the last finished run of each recalculation, labelled by its status (completed, failed, cancelled).",
    labels: ["name", "status"],
    sql: `
      select c.name, last.status, last.value
        from steward.recalculations c
       cross join lateral (
             select r.status, extract(epoch from r.finished_at - r.started_at)::float8 as value
               from steward.recalc_runs r
              where r.name = c.name and r.finished_at is not null
              order by r.id desc limit 1) as last`,
  },
  {
    name: "steward_circuit_state",
    help: "State of each configured or once-failed circuit breaker: 1 for the state it is in (closed, open, half_open), 0 for the others.",
    labels: ["circuit", "state"],
    sql: `
      select c.name as circuit, s.state, (c.state = s.state)::int::float8 as value
        from steward.circuit_status c
       cross join (values ('closed'), ('open'), ('half_open')) as s(state)`,
  },
];

export interface Metrics {
  registry: client.Registry;
  jobs: client.Counter<"task" | "outcome">;
  jobDuration: client.Histogram<"task">;
}

/** Creates the registry of one worker process; `pool` serves the database gauges. */
export function createMetrics(pool: pg.Pool, logger: Logger, gauges: DatabaseGauge[] = DATABASE_GAUGES): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "steward_" });
  const jobs = new client.Counter({
    name: "steward_jobs_total",
    help: "Job attempts finished by this process, by task and outcome (completed, failed: will retry, dead: out of attempts).",
    labelNames: ["task", "outcome"],
    registers: [registry],
  });
  const jobDuration = new client.Histogram({
    name: "steward_job_duration_seconds",
    help: "Time from a job's start to its end in this process, by task.",
    labelNames: ["task"],
    buckets: [0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 120, 600],
    registers: [registry],
  });
  for (const gauge of gauges) {
    new client.Gauge({
      name: gauge.name,
      help: gauge.help,
      labelNames: gauge.labels,
      registers: [registry],
      async collect() {
        this.reset();
        try {
          const { rows } = await pool.query({ text: gauge.sql });
          for (const row of rows as Array<Record<string, unknown>>) {
            const labels = Object.fromEntries(gauge.labels.map((label) => [label, String(row[label] ?? "")]));
            this.set(labels, Number(row.value));
          }
        } catch (error) {
          // A missing table (capability not migrated yet) or a slow database leaves the gauge empty.
          logger.debug({ gauge: gauge.name, err: error }, "could not read gauge");
        }
      },
    });
  }
  return { registry, jobs, jobDuration };
}
