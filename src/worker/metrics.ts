// Prometheus metrics of one worker process. Job counters are counted in process by the task
// wrapper (a crash loses the last few: metrics only, never state); database gauges are read
// when /metrics is scraped, each from one SQL query listed in DATABASE_GAUGES.
import client from "prom-client";
import type pg from "pg";
import type { Logger } from "../logger.ts";
import type { AttemptOutcome } from "./task.ts";

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
  {
    name: "steward_dead_letters",
    help: "Dead letters not yet replayed, by source (job, invalidation) and task.",
    labels: ["source", "task"],
    sql: `
      select source, coalesce(task_identifier, '') as task, count(*)::float8 as value
        from steward.dead_letters
       where replayed_at is null
       group by 1, 2`,
  },
  {
    name: "steward_workers",
    help: "Steward worker pools with a heartbeat row, by state (alive; stale: past workers.heartbeat_timeout, about to be released).",
    labels: ["state"],
    sql: `
      select case when heartbeat_at < pg_catalog.now() - steward.setting_interval('workers.heartbeat_timeout')
                  then 'stale' else 'alive' end as state,
             count(*)::float8 as value
        from steward.workers
       group by 1`,
  },
];

export interface Metrics {
  registry: client.Registry;
  /** Counts one finished attempt (steward_jobs_total, steward_job_duration_seconds). */
  recordJob(task: string, outcome: AttemptOutcome, ms: number): void;
}

const DURATION_BUCKETS = [0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 120, 600];

/** One task's attempts by outcome and their durations (bucket i: up to DURATION_BUCKETS[i]; last: above). */
interface TaskSeries {
  completed: number;
  retried: number;
  failed: number;
  buckets: number[];
  seconds: number;
}

/**
 * The job series as plain numbers per task, turned into Prometheus series when scraped.
 * prom-client's Counter and Histogram hash a label object on every call, about 1.5 µs a job:
 * 5 % of the no-op throughput the `jobs` benchmark measures.
 */
class JobSeries {
  readonly byTask = new Map<string, TaskSeries>();

  record(task: string, outcome: AttemptOutcome, ms: number): void {
    let series = this.byTask.get(task);
    if (!series) {
      series = {
        completed: 0,
        retried: 0,
        failed: 0,
        buckets: new Array(DURATION_BUCKETS.length + 1).fill(0),
        seconds: 0,
      };
      this.byTask.set(task, series);
    }
    series[outcome]++;
    const seconds = ms / 1000;
    series.seconds += seconds;
    let bucket = 0;
    while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++;
    series.buckets[bucket]!++;
  }
}

/**
 * A metric the registry prints as given: registry.metrics() only calls get(). The one cast is
 * because prom-client types registerMetric() for its own classes.
 */
function seriesMetric(
  name: string,
  help: string,
  type: "counter" | "histogram",
  values: () => client.MetricValueWithName<string>[],
): client.Metric<string> {
  const metric = {
    name,
    help,
    type,
    aggregator: "sum" as const,
    collect() {},
    get: async () => ({ name, help, type, aggregator: "sum" as const, collect() {}, values: values() }),
  };
  return metric as unknown as client.Metric<string>;
}

function jobMetrics(series: JobSeries): client.Metric<string>[] {
  const total = seriesMetric(
    "steward_jobs_total",
    "Job attempts finished by this process, by task and outcome (completed; retried: failed, will retry; failed: failed for good, now a dead letter), as in steward.job_stats.",
    "counter",
    () =>
      [...series.byTask].flatMap(([task, s]) =>
        (["completed", "retried", "failed"] as const)
          .filter((outcome) => s[outcome] > 0)
          .map((outcome) => ({ labels: { task, outcome }, value: s[outcome] })),
      ),
  );
  const name = "steward_job_duration_seconds";
  const duration = seriesMetric(name, "Time from a job's start to its end in this process, by task.", "histogram", () =>
    [...series.byTask].flatMap(([task, s]) => {
      let cumulative = 0;
      const buckets = s.buckets.map((n, i) => {
        cumulative += n;
        return { metricName: `${name}_bucket`, labels: { task, le: DURATION_BUCKETS[i] ?? "+Inf" }, value: cumulative };
      });
      return [
        ...buckets,
        { metricName: `${name}_sum`, labels: { task }, value: s.seconds },
        { metricName: `${name}_count`, labels: { task }, value: cumulative },
      ];
    }),
  );
  return [total, duration];
}

/** Creates the registry of one worker process; `pool` serves the database gauges. */
export function createMetrics(pool: pg.Pool, logger: Logger, gauges: DatabaseGauge[] = DATABASE_GAUGES): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "steward_" });
  const jobs = new JobSeries();
  for (const metric of jobMetrics(jobs)) registry.registerMetric(metric);
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
  return { registry, recordJob: (task, outcome, ms) => jobs.record(task, outcome, ms) };
}
