// `steward load`: the pre-launch load test, against a scratch database on a loopback server:
// a flat run (connections calling as fast as they can) or ramped stages of simulated users.
import fs from "node:fs/promises";
import { openDatabase } from "../../database.ts";
import { formatDuration, parseDuration } from "../../duration.ts";
import { UsageError } from "../../errors.ts";
import type { LoadPlan, LoadReport, LoadStage, Percentiles } from "../../../bench/load.ts";
import { textTable } from "../text-table.ts";
import type { Command } from "../command.ts";
import { durationOption, integerOption, numberOption, requireUnit } from "../options.ts";

/** The checklists' whole ramp (1k, 5k, 10k users) takes 19 minutes; room for it and more. */
const MAX_DURATION_MS = 30 * 60_000;
const MAX_USERS = 1_000_000;
const MAX_OPERATIONS = 20_000_000;

/** The load test talks only to a server on this machine: never a shared or production one. */
export function isLoopback(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
  return host === "" || host === "localhost" || host === "::1" || /^127\./.test(host) || host.startsWith("/");
}

/** `--stages 1000:2m,5000:5m,10000:12m`: ramp to each number of users over its duration. */
export function parseStages(text: string): LoadStage[] {
  const stages = text.split(",").map((part) => {
    const match = /^\s*(\d+)\s*:\s*(\S+)\s*$/.exec(part);
    if (!match) throw new UsageError(`--stages: "${part}" is not users:duration (e.g. 1000:2m,5000:5m,10000:12m)`);
    const users = Number(match[1]);
    if (users > MAX_USERS) throw new UsageError(`--stages: at most ${MAX_USERS} users a stage, got ${users}`);
    const durationMs = parseDuration(requireUnit(match[2]!, "--stages", "30s, 2m, 1h"), "--stages");
    if (durationMs < 1000) throw new UsageError(`--stages: a stage lasts at least 1s, got "${match[2]}"`);
    return { users, durationMs };
  });
  if (!stages.some((stage) => stage.users > 0)) throw new UsageError("--stages: some stage must have users");
  return stages;
}

/** The run the options ask for: stages, or a flat run; refuses mixing the two. */
function loadPlan(values: Record<string, unknown>): LoadPlan {
  if (values.stages !== undefined) {
    // In a ramp the stages say how many users there are and for how long.
    for (const flat of ["users", "duration"]) {
      if (values[flat] !== undefined) throw new UsageError(`--${flat} goes with a flat run, not with --stages`);
    }
    const stages = parseStages(String(values.stages));
    const total = stages.reduce((sum, stage) => sum + stage.durationMs, 0);
    if (total > MAX_DURATION_MS) {
      throw new UsageError(`--stages: the stages last ${formatDuration(total)} together; at most 30m`);
    }
    const thinkMs = durationOption(values.think, "--think", "1s");
    if (thinkMs < 1 || thinkMs > 60_000)
      throw new UsageError(`--think must be from 1ms to 1m, got "${String(values.think)}"`);
    return { kind: "stages", stages, thinkMs };
  }
  if (values.think !== undefined) throw new UsageError("--think goes with --stages");
  const durationMs = durationOption(values.duration, "--duration", "30s");
  if (durationMs < 1000 || durationMs > MAX_DURATION_MS) {
    throw new UsageError(`--duration must be from 1s to 30m, got "${String(values.duration)}"`);
  }
  return {
    kind: "flat",
    users: integerOption(values.users, "--users", { min: 1, max: MAX_USERS }, 10_000),
    connections: integerOption(values.connections, "--connections", { min: 1, max: 256 }, 32),
    durationMs,
  };
}

function figures(name: string, r: Percentiles): string[] {
  return [
    name,
    String(r.count),
    String(Math.round(r.ops_per_s)),
    r.p50_ms.toFixed(2),
    r.p95_ms.toFixed(2),
    r.p99_ms.toFixed(2),
    String(r.errors),
  ];
}

function reportTable(report: LoadReport): string {
  const rows = [
    ["operation", "calls", "ops/s", "p50 ms", "p95 ms", "p99 ms", "errors"],
    ...Object.entries(report.by_op).map(([name, r]) => figures(name, r)),
    figures("overall", report),
  ];
  return textTable(rows, { numeric: [1, 2, 3, 4, 5, 6] }).join("\n");
}

/** The cache hit rate of each stage from the cumulative hits and misses probed at its end. */
function hitRates(report: LoadReport): string[] {
  let hits = 0;
  let misses = 0;
  return report.stages.map((stage) => {
    const stageHits = (stage.probe?.hits ?? 0) - hits;
    const stageMisses = (stage.probe?.misses ?? 0) - misses;
    hits = stage.probe?.hits ?? hits;
    misses = stage.probe?.misses ?? misses;
    const reads = stageHits + stageMisses;
    return reads ? `${((stageHits / reads) * 100).toFixed(1)} %` : "-";
  });
}

function stageTable(report: LoadReport, http: boolean): string {
  const rates = hitRates(report);
  const rows = [
    [
      "stage",
      "users",
      "seconds",
      "calls",
      "ops/s",
      "p50 ms",
      "p95 ms",
      "p99 ms",
      "errors",
      ...(http ? ["429s", "429 share", "cache hits"] : []),
    ],
    ...report.stages.map((stage, i) => {
      const [, ...rest] = figures("", stage);
      const users = stage.from_users === stage.to_users ? `${stage.to_users}` : `${stage.from_users}→${stage.to_users}`;
      const limited = http ? [String(stage.limited), `${(stage.limited_share * 100).toFixed(1)} %`, rates[i]!] : [];
      return [String(stage.stage), users, stage.duration_s.toFixed(1), ...rest, ...limited];
    }),
  ];
  return textTable(rows, { numeric: [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] }).join("\n");
}

export const loadCommand: Command = {
  name: "load",
  usage:
    "load [--http] [--users 10000] [--connections 32] [--duration 30s] | [--stages 1000:2m,5000:5m,10000:12m [--think 1s]]\n" +
    "     [--max-p95-ms N] [--max-error-rate R] [--json FILE]\n" +
    "  --http              drive the Recall example over HTTP (resolve, message pages, batches; 429s\n" +
    "                      counted apart) instead of the client functions\n" +
    "  --users N           a flat run: distinct simulated users (keys), 1 to 1,000,000\n" +
    "  --connections N     concurrent connections, 1 to 256; a flat run keeps each busy\n" +
    "  --duration D        how long a flat run lasts, at most 30m\n" +
    "  --stages U:D,...    a ramp: from 0 (then from the stage before), to U active users over D;\n" +
    "                      each user calls once, then waits --think; at most 30m in all\n" +
    "  --think D           a user's wait between calls in a ramp (default 1s)\n" +
    "  --max-p95-ms N      exit 1 when the p95 latency is over N ms, overall or in a stage\n" +
    "  --max-error-rate R  exit 1 when the share of failed calls is over R (0 to 1), overall or in a stage\n" +
    "  --json FILE         write {ops_per_s, p50_ms, p95_ms, p99_ms, error_rate, by_op, stages} to FILE\n" +
    "Runs in a scratch database on a loopback server only, dropped afterwards.",
  options: {
    http: { type: "boolean" },
    users: { type: "string" },
    connections: { type: "string" },
    duration: { type: "string" },
    stages: { type: "string" },
    think: { type: "string" },
    "max-p95-ms": { type: "string" },
    "max-error-rate": { type: "string" },
    json: { type: "string" },
  },
  positionals: [0, 0],
  async run(_positionals, values, context) {
    const plan = loadPlan(values);
    const connections = integerOption(values.connections, "--connections", { min: 1, max: 256 }, 32);
    const maxP95Ms = numberOption(values["max-p95-ms"], "--max-p95-ms", { min: 0, max: 3_600_000 });
    const maxErrorRate = numberOption(values["max-error-rate"], "--max-error-rate", { min: 0, max: 1 });
    if (context.config.databaseUrl && !isLoopback(context.config.databaseUrl)) {
      throw new UsageError(
        "steward load runs only against a server on this machine (DATABASE_URL host must be loopback)",
      );
    }
    const users = plan.kind === "flat" ? plan.users : Math.max(...plan.stages.map((stage) => stage.users));

    // Loaded only when `steward load` runs: no other command pays for the load test's code.
    const [{ breaches, runLoad }, { startSqlDriver }, { startHttpDriver }] = await Promise.all([
      import("../../../bench/load.ts"),
      import("../../../bench/load-sql.ts"),
      import("../../../bench/load-http.ts"),
    ]);
    const database = await openDatabase(context.config, context.logger);
    let report: LoadReport;
    try {
      const http = values.http
        ? await startHttpDriver({ url: database.url, config: context.config, logger: context.logger, connections })
        : undefined;
      const driver =
        http ??
        (await startSqlDriver({
          url: database.url,
          config: context.config,
          logger: context.logger,
          users,
          connections,
        }));
      try {
        const what =
          plan.kind === "flat"
            ? `${users} users, ${connections} connections, ${formatDuration(plan.durationMs)}`
            : `stages ${plan.stages.map((stage) => `${stage.users}:${formatDuration(stage.durationMs)}`).join(",")}, ` +
              `think ${formatDuration(plan.thinkMs)}, ${connections} connections`;
        process.stderr.write(`load: ${what}\n`);
        report = await runLoad(driver.operations, plan, {
          maxOperations: MAX_OPERATIONS,
          stageProbe: http?.cache,
          onProgress: context.isTerminal
            ? (elapsed, completed, active) =>
                process.stderr.write(`\r  ${formatDuration(elapsed)}, ${active} users, ${completed} calls   `)
            : undefined,
        });
        if (context.isTerminal) process.stderr.write("\n");
      } finally {
        await driver.stop();
      }
    } finally {
      await database.release();
    }

    context.print(stageTable(report, values.http === true));
    context.print("");
    context.print(reportTable(report));
    context.print(`\n${Math.round(report.ops_per_s)} calls/s overall, error rate ${report.error_rate.toFixed(4)}`);
    if (values.http) {
      context.print(
        `${report.limited} calls refused with 429 (${(report.limited_share * 100).toFixed(1)} % of all calls, not errors)`,
      );
    }
    for (const error of report.sample_errors) context.print(`error: ${error}`);
    if (values.json) {
      const { sample_errors: _errors, ...json } = report;
      await fs.writeFile(values.json as string, JSON.stringify(json, null, 2) + "\n");
    }
    const broken = breaches(report, { maxP95Ms, maxErrorRate });
    for (const line of broken) context.print(`threshold broken: ${line}`);
    return broken.length ? 1 : 0;
  },
};
