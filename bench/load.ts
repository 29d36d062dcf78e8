// The pre-launch load test's runner: simulated users calling operations, latency percentiles
// per operation and per stage. What the operations call is a driver's business (bench/load-sql.ts
// drives the SQL functions; an HTTP driver can stand beside it): the runner sees only
// `run(user)`.

export interface LoadOperation {
  name: string;
  /** Relative share of calls. */
  weight: number;
  /** One call on behalf of simulated user `user` (0 to users - 1). */
  run(user: number): Promise<unknown>;
}

/**
 * Thrown by an operation whose call the service refused for its rate (an HTTP 429): counted
 * apart, neither an error nor a latency sample, as the checklist reports 429s beside errors.
 */
export class RateLimited extends Error {
  constructor() {
    super("rate limited");
    this.name = "RateLimited";
  }
}

/** What a driver hands the runner: the operations, and how to stop what it started. */
export interface LoadDriver {
  operations: LoadOperation[];
  stop(): Promise<void>;
}

/** Ramp to `users` simulated users over `durationMs` (from the previous stage's, or from 0). */
export interface LoadStage {
  users: number;
  durationMs: number;
}

export type LoadPlan =
  | {
      /** `connections` callers, each calling as fast as it can for users picked at random. */
      kind: "flat";
      users: number;
      connections: number;
      durationMs: number;
    }
  | {
      /** Each active user calls once, then waits `thinkMs`; stages ramp how many are active. */
      kind: "stages";
      stages: LoadStage[];
      thinkMs: number;
    };

export interface Percentiles {
  count: number;
  errors: number;
  ops_per_s: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  error_rate: number;
  /** Calls refused with RateLimited (429), and their share of all calls. */
  limited: number;
  limited_share: number;
}

export interface StageReport extends Percentiles {
  stage: number;
  /** Active users when the stage began and when it ended (the same for a flat run). */
  from_users: number;
  to_users: number;
  duration_s: number;
  by_op: Record<string, Percentiles>;
  /** What `stageProbe` returned when the stage ended, if the run was given one. */
  probe?: Record<string, number>;
}

export interface LoadReport extends Percentiles {
  duration_s: number;
  by_op: Record<string, Percentiles>;
  stages: StageReport[];
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
  limited = 0;
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
    this.limited += other.limited;
  }
  summary(seconds: number): Percentiles {
    const sorted = this.values.slice(0, this.length).sort();
    const total = this.length + this.errors;
    const calls = total + this.limited;
    return {
      count: this.length,
      errors: this.errors,
      ops_per_s: round(this.length / seconds),
      p50_ms: round(quantile(sorted, 0.5)),
      p95_ms: round(quantile(sorted, 0.95)),
      p99_ms: round(quantile(sorted, 0.99)),
      error_rate: total ? this.errors / total : 0,
      limited: this.limited,
      limited_share: calls ? round(this.limited / calls) : 0,
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

/** The samples of one stage, by operation. */
class StageSamples {
  readonly byOp: Map<string, Samples>;
  began = 0;
  ended = 0;
  probe: Record<string, number> | undefined;
  constructor(
    operations: LoadOperation[],
    readonly fromUsers: number,
    readonly toUsers: number,
  ) {
    this.byOp = new Map(operations.map((op) => [op.name, new Samples()]));
  }
  report(stage: number): StageReport {
    const seconds = Math.max(this.ended - this.began, 1) / 1000;
    const overall = new Samples();
    for (const sample of this.byOp.values()) overall.merge(sample);
    return {
      stage,
      from_users: this.fromUsers,
      to_users: this.toUsers,
      duration_s: round(seconds),
      ...overall.summary(seconds),
      by_op: Object.fromEntries([...this.byOp].map(([name, sample]) => [name, sample.summary(seconds)])),
      ...(this.probe ? { probe: this.probe } : {}),
    };
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `plan` against `operations` and reports latency percentiles overall, per operation and
 * per stage. A call's latency runs from when its user made it to its answer, so time spent
 * waiting for a free connection counts, as it would for a real user. Stops starting calls after
 * `maxOperations` (a bound on count as well as time).
 */
export async function runLoad(
  operations: LoadOperation[],
  plan: LoadPlan,
  options: {
    maxOperations?: number;
    onProgress?: (elapsedMs: number, completed: number, users: number) => void;
    /** Called as each stage ends (cumulative figures of the system under test, e.g. cache hits). */
    stageProbe?: () => Record<string, number>;
  } = {},
): Promise<LoadReport> {
  const pick = chooser(operations);
  const stages =
    plan.kind === "flat"
      ? [{ users: plan.users, durationMs: plan.durationMs }]
      : plan.stages.map((stage) => ({ ...stage }));
  const samples = stages.map(
    (stage, i) =>
      new StageSamples(operations, plan.kind === "flat" ? stage.users : (stages[i - 1]?.users ?? 0), stage.users),
  );
  const errors = new Set<string>();
  const maxOperations = options.maxOperations ?? Number.POSITIVE_INFINITY;
  const began = performance.now();
  const stageEnds = stages.reduce<number[]>((ends, stage) => [...ends, (ends.at(-1) ?? began) + stage.durationMs], []);
  const deadline = stageEnds.at(-1)!;
  const stageAt = (now: number) => {
    const index = stageEnds.findIndex((end) => now < end);
    return index === -1 ? stages.length - 1 : index;
  };
  /** Active users at `now`: ramped linearly within a stage from the previous stage's count. */
  const activeUsers = (now: number) => {
    const index = stageAt(now);
    const stage = samples[index]!;
    const start = stageEnds[index - 1] ?? began;
    const progress = Math.min(1, (now - start) / stages[index]!.durationMs);
    return Math.round(stage.fromUsers + (stage.toUsers - stage.fromUsers) * progress);
  };
  let started = 0;
  let completed = 0;
  samples.forEach((stage, i) => {
    stage.began = stageEnds[i - 1] ?? began;
    stage.ended = stageEnds[i]!;
  });

  const call = async (user: number) => {
    started++;
    const operation = pick();
    const callBegan = performance.now();
    const stage = samples[stageAt(callBegan)]!.byOp.get(operation.name)!;
    try {
      await operation.run(user);
      stage.add(performance.now() - callBegan);
    } catch (error) {
      if (error instanceof RateLimited) {
        stage.limited++;
        completed++;
        return;
      }
      stage.errors++;
      if (errors.size < 5) errors.add(`${operation.name}: ${(error as Error).message}`);
    }
    completed++;
  };
  const more = () => performance.now() < deadline && started < maxOperations;

  let usersNow = 0;
  const progress = options.onProgress
    ? setInterval(() => options.onProgress!(performance.now() - began, completed, usersNow), 1000)
    : undefined;
  try {
    if (plan.kind === "flat") {
      usersNow = plan.users;
      await Promise.all(
        Array.from({ length: plan.connections }, async () => {
          while (more()) await call(Math.floor(Math.random() * plan.users));
        }),
      );
    } else {
      // A user runs while the ramp counts it among the active ones; a controller starts users as
      // the ramp rises (again, after a ramp down). Each starts at a random point of its think
      // time, so they do not call in step.
      const running = new Set<Promise<void>>();
      const alive: boolean[] = [];
      const user = async (id: number) => {
        await sleep(Math.random() * plan.thinkMs);
        while (more() && id < activeUsers(performance.now())) {
          await call(id);
          await sleep(plan.thinkMs);
        }
        alive[id] = false;
      };
      let probed = 0;
      while (more()) {
        const index = stageAt(performance.now());
        for (; probed < index; probed++) samples[probed]!.probe = options.stageProbe?.();
        usersNow = activeUsers(performance.now());
        for (let id = 0; id < usersNow; id++) {
          if (alive[id]) continue;
          alive[id] = true;
          const done: Promise<void> = user(id).finally(() => running.delete(done));
          running.add(done);
        }
        await sleep(50);
      }
      await Promise.all(running);
    }
  } finally {
    if (progress) clearInterval(progress);
  }
  for (const stage of samples) stage.probe ??= options.stageProbe?.();
  const seconds = (performance.now() - began) / 1000;
  const overall = new Samples();
  const byOp = new Map(operations.map((op) => [op.name, new Samples()]));
  for (const stage of samples) {
    for (const [name, sample] of stage.byOp) {
      overall.merge(sample);
      byOp.get(name)!.merge(sample);
    }
  }
  // A run cut short by maxOperations ends its last stage early.
  const last = samples[stageAt(performance.now())]!;
  last.ended = Math.min(last.ended, performance.now());
  return {
    duration_s: round(seconds),
    ...overall.summary(seconds),
    by_op: Object.fromEntries([...byOp].map(([name, sample]) => [name, sample.summary(seconds)])),
    stages: samples.map((stage, i) => stage.report(i + 1)),
    sample_errors: [...errors],
  };
}

/** Thresholds broken by a report, overall or in any stage, as sentences; empty when it passes. */
export function breaches(report: LoadReport, limits: { maxP95Ms?: number; maxErrorRate?: number }): string[] {
  const broken: string[] = [];
  const check = (what: string, figures: Percentiles) => {
    if (limits.maxP95Ms !== undefined && figures.p95_ms > limits.maxP95Ms) {
      broken.push(`${what}p95 ${figures.p95_ms} ms is over --max-p95-ms ${limits.maxP95Ms}`);
    }
    if (limits.maxErrorRate !== undefined && figures.error_rate > limits.maxErrorRate) {
      broken.push(`${what}error rate ${figures.error_rate.toFixed(4)} is over --max-error-rate ${limits.maxErrorRate}`);
    }
  };
  check("", report);
  if (report.stages.length > 1) for (const stage of report.stages) check(`stage ${stage.stage}: `, stage);
  return broken;
}
