// Runs scenarios: ours and baseline alternately in rounds against one scratch database,
// medians, speedup.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createPool } from "../src/database.ts";
import { withDatabase } from "../src/embedded.ts";
import type { Logger } from "../src/logger.ts";
import { migrate } from "../src/migrate.ts";
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

/** A scratch database next to `url`, migrated; dropped by the returned function. */
export async function scratchDatabase(url: string, logger: Logger): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `steward_bench_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } catch (error) {
    const code = (error as { code?: string }).code;
    throw Object.assign(
      new Error(
        `steward bench creates a scratch database and could not (${(error as Error).message}); ` +
          `use a role with CREATEDB (the embedded server's default role has it)`,
      ),
      { code },
    );
  } finally {
    await admin.end();
  }
  const scratchUrl = withDatabase(url, name);
  await migrate(scratchUrl, logger);
  return {
    url: scratchUrl,
    async drop() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

export function benchContext(url: string, quick: boolean, logger: Logger): BenchContext {
  return { url, pool: createPool(url, { max: 8, applicationName: "steward bench" }), quick, logger };
}
