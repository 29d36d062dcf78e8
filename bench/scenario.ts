// What a benchmark scenario is: ours and a baseline doing the same job against the same
// database, each measured once per round. The runner (src/cli/commands/bench.ts) alternates them
// over rounds and reports medians and the speedup.
import type pg from "pg";
import type { Logger } from "../src/logger.ts";

export interface BenchContext {
  /** The scratch database the suite created and migrated for this run. */
  url: string;
  /** A pool on it for setup (not for measuring). */
  pool: pg.Pool;
  /** Smaller data and shorter runs, so the whole suite fits in 60 s on 2 cores. */
  quick: boolean;
  logger: Logger;
}

export interface Measurement {
  /** The figure in the scenario's unit. */
  value: number;
  /** Anything worth printing with --verbose or keeping in --json (counts, errors). */
  detail?: Record<string, unknown>;
}

export interface Scenario<State = unknown> {
  name: string;
  /** What is measured, e.g. "ops/s", "ms", "rows/s". */
  unit: string;
  /** True for throughputs (ops/s), false for durations (ms). Decides the direction of speedup. */
  higherIsBetter: boolean;
  /** One line: what ours does and what the baseline does. */
  description: string;
  /** Builds the data once; the rounds reuse it. */
  setup(context: BenchContext): Promise<State>;
  ours(state: State, context: BenchContext): Promise<Measurement>;
  baseline(state: State, context: BenchContext): Promise<Measurement>;
  teardown?(state: State, context: BenchContext): Promise<void>;
}

export function defineScenario<State>(scenario: Scenario<State>): Scenario<State> {
  return scenario;
}

/** Runs `operation` from `callers` concurrent loops for `durationMs`; returns operations per second. */
export async function throughput(
  callers: number,
  durationMs: number,
  operation: (caller: number, iteration: number) => Promise<unknown>,
): Promise<{ perSecond: number; count: number; errors: number }> {
  const deadline = performance.now() + durationMs;
  const began = performance.now();
  let count = 0;
  let errors = 0;
  await Promise.all(
    Array.from({ length: callers }, async (_, caller) => {
      for (let iteration = 0; performance.now() < deadline; iteration++) {
        try {
          await operation(caller, iteration);
          count++;
        } catch {
          errors++;
        }
      }
    }),
  );
  const seconds = (performance.now() - began) / 1000;
  return { perSecond: count / seconds, count, errors };
}

/** Milliseconds `work` takes. */
export async function timed(work: () => Promise<unknown>): Promise<number> {
  const began = performance.now();
  await work();
  return performance.now() - began;
}
