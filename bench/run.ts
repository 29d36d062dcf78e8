// Runs scenarios: ours and baseline alternately in rounds against one scratch database,
// medians, speedup.
import { createPool } from "../src/database.ts";
import type { Logger } from "../src/logger.ts";
import type { BenchContext, Measurement, Scenario } from "./scenario.ts";

export interface ScenarioResult {
  name: string;
  ours: number;
  baseline: number;
  unit: string;
  speedup: number;
  rounds: number;
  samples: { ours: number[]; baseline: number[] };
  detail?: { ours?: Record<string, unknown>; baseline?: Record<string, unknown> };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** How many times better ours is: above 1 means ours wins, whichever way the unit points. */
export function speedup(scenario: Pick<Scenario, "higherIsBetter">, ours: number, baseline: number): number {
  if (scenario.higherIsBetter) return baseline === 0 ? Infinity : ours / baseline;
  return ours === 0 ? Infinity : baseline / ours;
}

export async function runScenario(
  scenario: Scenario<unknown>,
  context: BenchContext,
  rounds: number,
  onRound?: (round: number, ours: Measurement, baseline: Measurement) => void,
): Promise<ScenarioResult> {
  const state = await scenario.setup(context);
  const samples = { ours: [] as number[], baseline: [] as number[] };
  let last: { ours?: Measurement; baseline?: Measurement } = {};
  try {
    for (let round = 0; round < rounds; round++) {
      // Alternate which goes first, so warm caches and background work favour neither.
      const order = round % 2 === 0 ? (["ours", "baseline"] as const) : (["baseline", "ours"] as const);
      for (const side of order) {
        const measurement = await scenario[side](state, context);
        samples[side].push(measurement.value);
        last = { ...last, [side]: measurement };
      }
      onRound?.(round, last.ours!, last.baseline!);
    }
  } finally {
    await scenario.teardown?.(state, context);
  }
  const ours = median(samples.ours);
  const baseline = median(samples.baseline);
  return {
    name: scenario.name,
    ours,
    baseline,
    unit: scenario.unit,
    speedup: speedup(scenario, ours, baseline),
    rounds,
    samples,
    detail: { ours: last.ours?.detail, baseline: last.baseline?.detail },
  };
}

export function benchContext(url: string, quick: boolean, logger: Logger): BenchContext {
  return { url, pool: createPool(url, { max: 8, applicationName: "steward bench" }), quick, logger };
}
