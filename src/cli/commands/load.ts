// `steward load`: the pre-launch load test, against a scratch database on a loopback server.
import fs from "node:fs/promises";
import { openDatabase, createPool } from "../../database.ts";
import { formatDuration } from "../../duration.ts";
import { RateLimiter } from "../../client/rate-limits.ts";
import { UsageError } from "../../errors.ts";
import { breaches, runLoad, type LoadOperation, type LoadReport } from "../../../bench/load.ts";
import { scratchDatabase } from "../../../bench/scratch.ts";
import { textTable } from "../text-table.ts";
import { startWorker } from "../../worker/runner.ts";
import type { Command } from "../command.ts";
import { durationOption, integerOption, numberOption } from "../options.ts";

const MAX_DURATION_MS = 10 * 60_000;
const MAX_OPERATIONS = 20_000_000;

/** The load test talks only to a server on this machine: never a shared or production one. */
export function isLoopback(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
  return host === "" || host === "localhost" || host === "::1" || /^127\./.test(host) || host.startsWith("/");
}

const VIEW = "public.load_profile_stats";

/** What the simulated users do, with the share of calls each gets. */
function operations(limiter: RateLimiter): LoadOperation[] {
  return [
    {
      name: "rate_limit_hit",
      weight: 50,
      // Through the TypeScript client, as application code calls it (coalesced per tick).
      run: (_pool, user) => limiter.hit("load", `user:${user}`),
    },
    {
      name: "lease",
      weight: 15,
      async run(pool, user) {
        const key = `export:${user % 500}`;
        const { rows } = await pool.query<{ lease: string | null }>(
          "select steward.lease_acquire($1, 2, '30 seconds') as lease",
          [key],
        );
        if (rows[0]?.lease) await pool.query("select steward.lease_release($1)", [rows[0].lease]);
      },
    },
    {
      name: "enqueue_invalidation",
      weight: 20,
      run: (pool, user) =>
        pool.query("select steward.enqueue_invalidation($1)", [user % 20 === 0 ? `mv:${VIEW}` : `user:${user}`]),
    },
    {
      name: "record_requests",
      weight: 15,
      run: (pool, user) =>
        pool.query("select steward.record_requests($1::jsonb)", [
          JSON.stringify(
            Array.from({ length: 5 }, (_, i) => ({
              at: new Date().toISOString(),
              endpoint: ["/feed", "/profile", "/search", "/metrics"][(user + i) % 4],
              method: i % 3 === 0 ? "POST" : "GET",
              status: Math.random() < 0.01 ? 503 : 200,
              duration_ms: Math.round(5 + Math.random() * 120),
              cache_hit: Math.random() < 0.6,
              request_id: `${user}-${Date.now()}-${i}`,
            })),
          ),
        ]),
    },
  ];
}

async function prepare(url: string, users: number): Promise<void> {
  const pool = createPool(url, { max: 1 });
  try {
    await pool.query("select steward.set_rate_limit('load', 60, '1 minute')");
    await pool.query("select steward.set_rate_limit('load', 1000, '1 hour')");
    await pool.query("create table public.load_profiles (user_id int primary key, visits int not null default 0)");
    await pool.query("insert into public.load_profiles (user_id) select g from generate_series(0, $1 - 1) g", [users]);
    await pool.query(
      `create materialized view ${VIEW} as select visits % 10 as bucket, count(*) as users from public.load_profiles group by 1`,
    );
    await pool.query(`create unique index on ${VIEW} (bucket)`);
    await pool.query(`select steward.register_materialized_view('${VIEW}', debounce => '2 seconds')`);
  } finally {
    await pool.end();
  }
}

function reportTable(report: LoadReport): string {
  const rows = [
    ["operation", "calls", "ops/s", "p50 ms", "p95 ms", "p99 ms", "errors"],
    ...[...Object.entries(report.by_op), ["overall", report] as const].map(([name, r]) => [
      name,
      String(r.count),
      String(Math.round(r.ops_per_s)),
      r.p50_ms.toFixed(2),
      r.p95_ms.toFixed(2),
      r.p99_ms.toFixed(2),
      String(r.errors),
    ]),
  ];
  return textTable(rows, { numeric: [1, 2, 3, 4, 5, 6] }).join("\n");
}

export const loadCommand: Command = {
  name: "load",
  summary: "the pre-launch load test: simulated users on the client functions while a worker drains and refreshes",
  usage:
    "load [--users 10000] [--connections 32] [--duration 30s] [--max-p95-ms N] [--max-error-rate R] [--json FILE]\n" +
    "  --users N           distinct simulated users (keys), 1 to 1,000,000\n" +
    "  --connections N     concurrent connections, 1 to 256\n" +
    "  --duration D        how long to run, at most 10m\n" +
    "  --max-p95-ms N      exit 1 when the overall p95 latency is over N ms\n" +
    "  --max-error-rate R  exit 1 when the share of failed calls is over R (0 to 1)\n" +
    "  --json FILE         write {ops_per_s, p50_ms, p95_ms, p99_ms, error_rate, by_op} to FILE\n" +
    "Runs in a scratch database on a loopback server only, dropped afterwards.",
  options: {
    users: { type: "string" },
    connections: { type: "string" },
    duration: { type: "string" },
    "max-p95-ms": { type: "string" },
    "max-error-rate": { type: "string" },
    json: { type: "string" },
  },
  positionals: [0, 0],
  async run(_positionals, values, context) {
    const users = integerOption(values.users, "--users", { min: 1, max: 1_000_000 }, 10_000);
    const connections = integerOption(values.connections, "--connections", { min: 1, max: 256 }, 32);
    const durationMs = durationOption(values.duration, "--duration", "30s");
    if (durationMs < 1000 || durationMs > MAX_DURATION_MS) {
      throw new UsageError(`--duration must be from 1s to 10m, got "${String(values.duration)}"`);
    }
    const maxP95Ms = numberOption(values["max-p95-ms"], "--max-p95-ms", { min: 0, max: 3_600_000 });
    const maxErrorRate = numberOption(values["max-error-rate"], "--max-error-rate", { min: 0, max: 1 });
    if (context.config.databaseUrl && !isLoopback(context.config.databaseUrl)) {
      throw new UsageError(
        "steward load runs only against a server on this machine (DATABASE_URL host must be loopback)",
      );
    }

    const database = await openDatabase(context.config, context.logger);
    let report: LoadReport;
    try {
      const scratch = await scratchDatabase(database.url, context.logger, "load");
      try {
        await prepare(scratch.url, users);
        const worker = await startWorker({
          url: scratch.url,
          config: { ...context.config, concurrency: 2 },
          logger: context.logger,
          health: false,
        });
        const pool = createPool(scratch.url, { max: connections, applicationName: "steward load" });
        try {
          process.stderr.write(`load: ${users} users, ${connections} connections, ${formatDuration(durationMs)}\n`);
          report = await runLoad(
            pool,
            operations(new RateLimiter(pool)),
            { users, connections, durationMs, maxOperations: MAX_OPERATIONS },
            context.isTerminal
              ? (elapsed, completed) => process.stderr.write(`\r  ${formatDuration(elapsed)}, ${completed} calls`)
              : undefined,
          );
          if (context.isTerminal) process.stderr.write("\n");
        } finally {
          await pool.end();
          await worker.stop("load test over");
        }
      } finally {
        await scratch.drop();
      }
    } finally {
      await database.release();
    }

    context.print(reportTable(report));
    context.print(`\n${Math.round(report.ops_per_s)} calls/s overall, error rate ${report.error_rate.toFixed(4)}`);
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
