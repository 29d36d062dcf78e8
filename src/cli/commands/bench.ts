// `steward bench [--quick] [--json FILE] [--only NAME[,NAME]] [--rounds N] [--workers N[,N…]]`
import fs from "node:fs/promises";
import os from "node:os";
import type { ScenarioResult } from "../../../bench/run.ts";
import { formatDuration } from "../../duration.ts";
import { StewardError, UsageError } from "../../errors.ts";
import { openDatabase } from "../../database.ts";
import { textTable } from "../text-table.ts";
import type { Command } from "../command.ts";
import { integerOption } from "../options.ts";

/** Libraries only the benchmarks' baselines use: development dependencies, absent from an installed package. */
const BENCH_LIBRARIES = ["rate-limiter-flexible", "pg-copy-streams"];

/**
 * The benchmark code, loaded only when `steward bench` runs: no other command pays for it, and
 * an installed package without the development dependencies says so instead of crashing.
 */
async function loadBench() {
  try {
    const [{ SCENARIOS }, { benchContext, runScenario }, { scratchDatabase }, { runFleet }] = await Promise.all([
      import("../../../bench/index.ts"),
      import("../../../bench/run.ts"),
      import("../../../bench/scratch.ts"),
      import("../../../bench/fleet.ts"),
    ]);
    return { SCENARIOS, benchContext, runScenario, scratchDatabase, runFleet };
  } catch (error) {
    const missing = BENCH_LIBRARIES.find((name) => (error as Error).message.includes(`'${name}'`));
    if ((error as { code?: string }).code === "ERR_MODULE_NOT_FOUND" && missing) {
      throw new StewardError(
        "BENCH_UNAVAILABLE",
        `the benchmarks need pg-steward's development dependencies (${BENCH_LIBRARIES.join(", ")}; "${missing}" is not installed): run \`steward bench\` from a clone of pg-steward after \`npm install\`, or install them beside this package`,
      );
    }
    throw error;
  }
}

function format(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString("en-US");
  return value.toPrecision(3);
}

function resultTable(results: ScenarioResult[]): string {
  const rows = [
    ["scenario", "ours", "baseline", "unit", "speedup"],
    ...results.map((r) => [r.name, format(r.ours), format(r.baseline), r.unit, `${r.speedup.toFixed(2)}x`]),
  ];
  return textTable(rows, { numeric: [1, 2, 4] }).join("\n");
}

export const benchCommand: Command = {
  name: "bench",
  usage:
    "bench [--quick] [--json FILE] [--only NAME[,NAME…]] [--rounds N] [--workers N[,N…]]\n" +
    "  --quick       smaller data and fewer rounds: the whole suite within 60 s on 2 cores\n" +
    '  --json FILE   also write {"scenarios": [{name, ours, baseline, unit, speedup}]} to FILE\n' +
    "  --only NAMES  run only these scenarios (comma-separated)\n" +
    "  --rounds N    rounds per scenario (default 5, --quick 3); medians are reported\n" +
    "  --workers N   fleets of N worker processes against one database instead of the scenarios:\n" +
    "                jobs/s, drain tags/s, and connections and statements/s of the idle fleet\n" +
    "                (--only jobs or drain)",
  options: {
    quick: { type: "boolean" },
    json: { type: "string" },
    only: { type: "string" },
    rounds: { type: "string" },
    workers: { type: "string" },
  },
  positionals: [0, 0],
  async run(_positionals, values, context) {
    const bench = await loadBench();
    const { SCENARIOS, benchContext, runScenario, scratchDatabase } = bench;
    const quick = Boolean(values.quick);
    const only = (values.only as string | undefined)
      ?.split(",")
      .map((name) => name.trim())
      .filter(Boolean);
    if (values.workers !== undefined) return runFleetCommand(values, only, quick, context, bench);
    const known = SCENARIOS.map((s) => s.name);
    const unknown = only?.filter((name) => !known.includes(name)) ?? [];
    if (unknown.length) throw new UsageError(`unknown scenario ${unknown.join(", ")}; scenarios: ${known.join(", ")}`);
    const rounds = integerOption(values.rounds, "--rounds", { min: 1, max: 100 }, quick ? 3 : 5);
    const scenarios = SCENARIOS.filter((s) => !only || only.includes(s.name));
    const database = await openDatabase(context.config, context.logger);
    const began = Date.now();
    const results: ScenarioResult[] = [];
    try {
      const scratch = await scratchDatabase(database.url, context.logger, "bench");
      const benchmark = benchContext(scratch.url, quick, context.logger);
      try {
        for (const scenario of scenarios) {
          process.stderr.write(`${scenario.name}: ${scenario.description}\n`);
          const result = await runScenario(scenario, benchmark, rounds, (round, ours, baseline) => {
            process.stderr.write(
              `  round ${round + 1}/${rounds}: ours ${format(ours.value)} ${scenario.unit}, baseline ${format(baseline.value)} ${scenario.unit}\n`,
            );
          });
          results.push(result);
        }
      } finally {
        await benchmark.pool.end();
        await scratch.drop();
      }
    } finally {
      await database.release();
    }
    context.print(resultTable(results));
    context.print(
      `\n${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}; ${rounds} rounds, medians; ${formatDuration(Date.now() - began)}`,
    );
    if (values.json) {
      const scenariosJson = results.map(({ name, ours, baseline, unit, speedup }) => ({
        name,
        ours,
        baseline,
        unit,
        speedup,
      }));
      await fs.writeFile(
        values.json as string,
        JSON.stringify(
          {
            scenarios: scenariosJson,
            machine: { cores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version },
            quick,
            rounds,
            samples: Object.fromEntries(results.map((r) => [r.name, { ...r.samples, detail: r.detail }])),
          },
          null,
          2,
        ) + "\n",
      );
    }
    return 0;
  },
};

/** `--workers 1,2,4`: each fleet size in turn (bench/fleet.ts). */
async function runFleetCommand(
  values: Record<string, unknown>,
  only: string[] | undefined,
  quick: boolean,
  context: Parameters<Command["run"]>[2],
  { scratchDatabase, runFleet }: Awaited<ReturnType<typeof loadBench>>,
): Promise<number> {
  const sizes = String(values.workers)
    .split(",")
    .map((item) => integerOption(item.trim(), "--workers", { min: 1, max: 64 }, 1));
  const unknown = only?.filter((name) => name !== "jobs" && name !== "drain") ?? [];
  if (unknown.length) throw new UsageError(`--workers measures jobs and drain only, not ${unknown.join(", ")}`);
  const rounds = integerOption(values.rounds, "--rounds", { min: 1, max: 100 }, quick ? 1 : 3);
  const database = await openDatabase(context.config, context.logger);
  const began = Date.now();
  try {
    const scratch = await scratchDatabase(database.url, context.logger, "bench");
    try {
      const results = await runFleet(scratch.url, sizes, {
        quick,
        rounds,
        only,
        onRound: (line) => process.stderr.write(`${line}\n`),
      });
      const rows = [
        ["workers", "jobs/s", "drain tags/s", "connections/worker", "idle statements/s"],
        ...results.map((r) => [
          String(r.workers),
          format(r.jobsPerSecond),
          format(r.tagsPerSecond),
          format(r.connections),
          format(r.idleStatementsPerSecond),
        ]),
      ];
      context.print(textTable(rows, { numeric: [0, 1, 2, 3, 4] }).join("\n"));
      context.print(
        `\n${os.cpus().length} cores, node ${process.version}; ${rounds} rounds, medians; idle statements counted by ${results[0]?.counted ?? "-"}; ${formatDuration(Date.now() - began)}`,
      );
      if (values.json) await fs.writeFile(values.json as string, JSON.stringify({ fleet: results }, null, 2) + "\n");
    } finally {
      await scratch.drop();
    }
  } finally {
    await database.release();
  }
  return 0;
}
