import { describe, expect, it } from "vitest";
import { median, runScenario, speedup } from "../bench/run.ts";
import { defineScenario, type BenchContext } from "../bench/scenario.ts";
import { runCli, testLogger } from "./helpers.ts";

describe("steward bench", () => {
  it("reports speedup above 1 when ours wins, for throughputs and for durations alike", () => {
    expect(speedup({ higherIsBetter: true }, 200, 100)).toBe(2);
    expect(speedup({ higherIsBetter: false }, 50, 100)).toBe(2);
    expect(speedup({ higherIsBetter: false }, 200, 100)).toBe(0.5);
  });

  it("alternates ours and the baseline over rounds and reports medians", async () => {
    const calls: string[] = [];
    let n = 0;
    const scenario = defineScenario({
      name: "fake",
      unit: "ops/s",
      higherIsBetter: true,
      description: "fake",
      setup: async () => ({}),
      ours: async () => (calls.push("ours"), { value: [10, 30, 20][n++ % 3]! }),
      baseline: async () => (calls.push("baseline"), { value: 10 }),
    });
    const context = { quick: true, logger: testLogger() } as BenchContext;
    const result = await runScenario(scenario, context, 3);
    expect(calls).toEqual(["ours", "baseline", "baseline", "ours", "ours", "baseline"]);
    expect(result).toMatchObject({ name: "fake", ours: 20, baseline: 10, speedup: 2, unit: "ops/s" });
    expect(median([3, 1, 2, 4])).toBe(2.5);
  });

  it("exits 2 naming an unknown scenario", async () => {
    const result = await runCli(["bench", "--only", "no_such_scenario"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("unknown scenario no_such_scenario");
  });
});
