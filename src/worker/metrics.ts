// Prometheus metrics of one worker process. Job counters are counted in process by the task
// wrapper (a crash loses the last few: metrics only, never state). Every database-wide series
// comes from one statement, `select * from steward.metrics()` (the union of the capabilities'
// metric sources, migrations/committed/000001-foundation.sql), on a connection of its own,
// cached for a few seconds and shared by concurrent scrapes.
import client from "prom-client";
import type pg from "pg";
import type { Logger } from "../logger.ts";
import type { AttemptOutcome } from "./task.ts";

/** One row of steward.metrics(). */
export interface DatabaseSample {
  metric: string;
  kind: "gauge" | "counter";
  help: string;
  labels: Record<string, string>;
  value: number;
}

export interface Metrics {
  registry: client.Registry;
  /** Counts one finished attempt (steward_jobs_total, steward_job_duration_seconds). */
  recordJob(task: string, outcome: AttemptOutcome, ms: number): void;
  /** The text of one scrape: this process's series, then the database's. */
  scrape(): Promise<string>;
  contentType: string;
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

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
const escapeLabel = (text: string) => text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/**
 * The database's samples in Prometheus text format, one family per metric. A family whose name
 * the process already exposes, or a sample with a label name Prometheus would refuse, is left
 * out (reported through `skipped`): one bad line makes Prometheus reject the whole scrape.
 */
export function formatSamples(
  samples: DatabaseSample[],
  taken: ReadonlySet<string>,
  skipped: (what: string) => void,
): string {
  const families = new Map<string, DatabaseSample[]>();
  for (const sample of samples) {
    let family = families.get(sample.metric);
    if (!family) families.set(sample.metric, (family = []));
    family.push(sample);
  }
  const lines: string[] = [];
  for (const [name, family] of families) {
    if (!METRIC_NAME.test(name) || taken.has(name)) {
      skipped(`metric ${name}`);
      continue;
    }
    const first = family[0]!;
    lines.push(`# HELP ${name} ${escapeHelp(first.help ?? "")}`, `# TYPE ${name} ${first.kind}`);
    for (const sample of family) {
      // In name order: jsonb keeps its own (shortest first), and a stable order reads better.
      const labels = Object.entries(sample.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const bad = labels.find(([key]) => !LABEL_NAME.test(key) || key.startsWith("__"));
      if (bad) {
        skipped(`label ${bad[0]} of ${name}`);
        continue;
      }
      const text = labels.map(([key, value]) => `${key}="${escapeLabel(String(value))}"`).join(",");
      lines.push(`${name}${text ? `{${text}}` : ""} ${formatValue(Number(sample.value))}`);
    }
  }
  return lines.length ? `${lines.join("\n")}\n` : "";
}

export interface MetricsOptions {
  /** Serves steward.metrics(): a pool of its own (one connection is enough), or null for none. */
  pool: pg.Pool | null;
  logger: Logger;
  /** How long one reading of steward.metrics() is served (default 5000 ms). */
  cacheMs?: number;
}

/**
 * steward.metrics() read at most once per `cacheMs`, whatever the number of scrapers: a scrape
 * within it gets the last reading; the first one after it starts a new reading, which
 * concurrent scrapes share (single flight), and meanwhile every scrape still gets the last
 * reading, so a slow statement never makes a scrape wait. A reading is therefore at most
 * `cacheMs` plus one statement old (the statement is cancelled after its timeout). Only a scrape
 * with no reading at all (the first, or the first after a failed reading) waits.
 */
class DatabaseSamples {
  private reading: { at: number; samples: DatabaseSample[] } | undefined;
  private inFlight: Promise<DatabaseSample[]> | undefined;
  private readonly queryDuration: client.Gauge;
  private readonly failures: client.Counter;
  private readonly age: client.Gauge;

  constructor(
    private readonly pool: pg.Pool,
    private readonly logger: Logger,
    private readonly cacheMs: number,
    registry: client.Registry,
  ) {
    // A source that raises is reported by the database as a warning: the reason, for the log.
    pool.on("connect", (connection) =>
      connection.on("notice", (notice) =>
        logger.warn({ notice: notice.message }, "database notice while reading metrics"),
      ),
    );
    this.queryDuration = new client.Gauge({
      name: "steward_metrics_query_seconds",
      help: "How long the last reading of steward.metrics() (the database series of /metrics) took.",
      registers: [registry],
    });
    this.failures = new client.Counter({
      name: "steward_metrics_query_failures_total",
      help: "Readings of steward.metrics() that failed: the scrapes that needed them had no database series.",
      registers: [registry],
    });
    this.age = new client.Gauge({
      name: "steward_metrics_database_age_seconds",
      help: "Age of the reading of steward.metrics() this scrape shows (up to STEWARD_METRICS_CACHE_MS plus the time one reading takes).",
      registers: [registry],
    });
  }

  async samples(): Promise<DatabaseSample[]> {
    const reading = this.reading;
    const age = reading ? performance.now() - reading.at : Infinity;
    if (age >= this.cacheMs) this.inFlight ??= this.read();
    if (reading) {
      this.age.set(age / 1000);
      return reading.samples;
    }
    const samples = await this.inFlight!;
    this.age.set(0);
    return samples;
  }

  /** Logs a source when it starts failing and when it answers again, not on every reading. */
  private failing = new Set<string>();
  private reportSources(rows: DatabaseSample[]): void {
    const now = new Set(
      rows
        .filter((row) => row.metric === "steward_metric_source_errors" && row.value > 0)
        .map((row) => row.labels.source!),
    );
    for (const source of now) {
      if (!this.failing.has(source))
        this.logger.warn(
          { source },
          "a metric source fails: its series are missing from /metrics (the reason is in the database's log)",
        );
    }
    for (const source of this.failing) {
      if (!now.has(source)) this.logger.info({ source }, "a metric source answers again");
    }
    this.failing = now;
  }

  private async read(): Promise<DatabaseSample[]> {
    const began = performance.now();
    try {
      const { rows } = await this.pool.query<DatabaseSample>(
        "select metric, kind, help, labels, value from steward.metrics()",
      );
      this.reading = { at: performance.now(), samples: rows };
      this.reportSources(rows);
      return rows;
    } catch (error) {
      // A database that does not answer (or is not migrated yet) leaves the database series out.
      this.reading = undefined;
      this.failures.inc();
      this.logger.warn({ err: error }, "could not read steward.metrics()");
      return [];
    } finally {
      this.queryDuration.set((performance.now() - began) / 1000);
      this.inFlight = undefined;
    }
  }
}

/** Creates the registry of one worker process. */
export function createMetrics(options: MetricsOptions): Metrics {
  const { logger } = options;
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: "steward_" });
  const jobs = new JobSeries();
  for (const metric of jobMetrics(jobs)) registry.registerMetric(metric);
  const cacheMs = options.cacheMs ?? 5000;
  const database = options.pool ? new DatabaseSamples(options.pool, logger, cacheMs, registry) : null;
  const rendered = new WeakMap<DatabaseSample[], string>();
  let last: { at: number; samples: DatabaseSample[]; text: string } | undefined;
  const reported = new Set<string>();
  const skipped = (what: string) => {
    if (reported.has(what)) return;
    reported.add(what);
    logger.warn({ what }, "left a malformed database series out of /metrics");
  };
  return {
    registry,
    contentType: registry.contentType,
    recordJob: (task, outcome, ms) => jobs.record(task, outcome, ms),
    async scrape() {
      const samples = database ? await database.samples() : [];
      // Scrapes within a second of each other (many scrapers, or a storm of them) share one
      // text; a reading of the database is turned into text once.
      const now = performance.now();
      if (last && last.samples === samples && now - last.at < Math.min(cacheMs, 1000)) return last.text;
      const own = await registry.metrics();
      let text = rendered.get(samples);
      if (text === undefined) {
        const taken = new Set(registry.getMetricsAsArray().map((metric) => metric.name));
        text = formatSamples(samples, taken, skipped);
        rendered.set(samples, text);
      }
      last = { at: now, samples, text: own + text };
      return last.text;
    },
  };
}
