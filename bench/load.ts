// The pre-launch load test: simulated users calling the client functions from many connections
// for a fixed time while a worker drains and refreshes; latency percentiles per operation.
import type pg from "pg";

export interface LoadOperation {
  name: string;
  /** Relative share of calls. */
  weight: number;
  run(pool: pg.Pool, user: number): Promise<unknown>;
}

export interface LoadOptions {
  users: number;
  connections: number;
  durationMs: number;
  /** Stop early after this many operations (a bound on count as well as time). */
  maxOperations?: number;
}

export interface Percentiles {
  count: number;
  errors: number;
  ops_per_s: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  error_rate: number;
}

export interface LoadReport extends Percentiles {
  duration_s: number;
  by_op: Record<string, Percentiles>;
  /** The first few distinct error messages, for the operator. */
  sample_errors: string[];
}

/** The value at quantile q (0..1) of sorted values, nearest-rank. */
export function quantile(sorted: Float64Array | number[], q: number): number {
  if (!sorted.length) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

class Samples {
  private values = new Float64Array(1024);
  length = 0;
  errors = 0;
  add(ms: number) {
    if (this.length === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length++] = ms;
  }
  merge(other: Samples) {
    for (let i = 0; i < other.length; i++) this.add(other.values[i]!);
    this.errors += other.errors;
  }
  summary(seconds: number): Percentiles {
    const sorted = this.values.slice(0, this.length).sort();
    const total = this.length + this.errors;
    return {
      count: this.length,
      errors: this.errors,
      ops_per_s: round(this.length / seconds),
      p50_ms: round(quantile(sorted, 0.5)),
      p95_ms: round(quantile(sorted, 0.95)),
      p99_ms: round(quantile(sorted, 0.99)),
      error_rate: total ? this.errors / total : 0,
    };
  }
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/** Picks operations by weight with a cumulative table. */
function chooser(operations: LoadOperation[]): () => LoadOperation {
  const total = operations.reduce((sum, op) => sum + op.weight, 0);
  let sum = 0;
  const cumulative = operations.map((op) => (sum += op.weight / total));
  return () => {
    const r = Math.random();
    const index = cumulative.findIndex((edge) => r < edge);
    return operations[index === -1 ? operations.length - 1 : index]!;
  };
}

export async function runLoad(
  pool: pg.Pool,
  operations: LoadOperation[],
  options: LoadOptions,
  onProgress?: (elapsedMs: number, completed: number) => void,
): Promise<LoadReport> {
  const pick = chooser(operations);
  const samples = new Map(operations.map((op) => [op.name, new Samples()]));
  const errors = new Set<string>();
  const began = performance.now();
  const deadline = began + options.durationMs;
  const maxOperations = options.maxOperations ?? Number.POSITIVE_INFINITY;
  let started = 0;
  let completed = 0;
  const progress = onProgress ? setInterval(() => onProgress(performance.now() - began, completed), 1000) : undefined;
  await Promise.all(
    Array.from({ length: options.connections }, async () => {
      while (performance.now() < deadline && started < maxOperations) {
        started++;
        const operation = pick();
        const user = Math.floor(Math.random() * options.users);
        const callBegan = performance.now();
        try {
          await operation.run(pool, user);
          samples.get(operation.name)!.add(performance.now() - callBegan);
        } catch (error) {
          samples.get(operation.name)!.errors++;
          if (errors.size < 5) errors.add(`${operation.name}: ${(error as Error).message}`);
        }
        completed++;
      }
    }),
  );
  if (progress) clearInterval(progress);
  const seconds = (performance.now() - began) / 1000;
  const overall = new Samples();
  for (const sample of samples.values()) overall.merge(sample);
  return {
    duration_s: round(seconds),
    ...overall.summary(seconds),
    by_op: Object.fromEntries([...samples].map(([name, sample]) => [name, sample.summary(seconds)])),
    sample_errors: [...errors],
  };
}

/** Thresholds broken by a report, as sentences; empty when it passes. */
export function breaches(report: LoadReport, limits: { maxP95Ms?: number; maxErrorRate?: number }): string[] {
  const broken: string[] = [];
  if (limits.maxP95Ms !== undefined && report.p95_ms > limits.maxP95Ms) {
    broken.push(`p95 ${report.p95_ms} ms is over --max-p95-ms ${limits.maxP95Ms}`);
  }
  if (limits.maxErrorRate !== undefined && report.error_rate > limits.maxErrorRate) {
    broken.push(`error rate ${report.error_rate.toFixed(4)} is over --max-error-rate ${limits.maxErrorRate}`);
  }
  return broken;
}
