import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { isLoopback } from "../src/cli/commands/load.ts";
import { breaches, quantile, runLoad } from "../bench/load.ts";
import { runCli, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

describe("steward load", () => {
  it("takes percentiles by nearest rank", () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(quantile(values, 0.5)).toBe(50);
    expect(quantile(values, 0.95)).toBe(95);
    expect(quantile(values, 0.99)).toBe(99);
    expect(quantile([], 0.5)).toBe(0);
  });

  it("counts every call once, by operation, with failures as errors", async () => {
    let calls = 0;
    const report = await runLoad(
      context.db.pool,
      [
        { name: "select", weight: 3, run: (pool) => (calls++, pool.query("select 1")) },
        { name: "broken", weight: 1, run: (pool) => (calls++, pool.query("select 1/0")) },
      ],
      { users: 100, connections: 8, durationMs: 60_000, maxOperations: 400 },
    );
    expect(calls).toBe(400);
    expect(report.count + report.errors).toBe(400);
    expect(report.by_op.broken!.count).toBe(0);
    expect(report.errors).toBe(report.by_op.broken!.errors);
    expect(report.error_rate).toBeCloseTo(report.errors / 400);
    expect(report.sample_errors).toEqual(["broken: division by zero"]);
    expect(breaches(report, { maxErrorRate: 0.01 })).toHaveLength(1);
    expect(breaches(report, { maxErrorRate: 1, maxP95Ms: 60_000 })).toEqual([]);
  });

  it("accepts only loopback servers", () => {
    expect(isLoopback("postgres://u:p@127.0.0.1:5432/db")).toBe(true);
    expect(isLoopback("postgres://u:p@localhost/db")).toBe(true);
    expect(isLoopback("postgres://u:p@[::1]:5432/db")).toBe(true);
    expect(isLoopback("postgres://u:p@db.internal:5432/db")).toBe(false);
  });

  it("exits 2 on a remote DATABASE_URL or an unbounded duration, before connecting", async () => {
    const remote = await runCli(["load", "--duration", "5s"], { DATABASE_URL: "postgres://u:p@db.example.com/app" });
    expect(remote.code).toBe(2);
    expect(remote.stderr).toContain("loopback");
    const long = await runCli(["load", "--duration", "2h"], { DATABASE_URL: context.db.url });
    expect(long.code).toBe(2);
    expect(long.stderr).toContain("--duration must be from 1s to 10m");
  });

  it("runs every operation against a scratch database while a worker drains, writes the JSON, and exits 1 on a broken threshold", async () => {
    const file = path.join(await fs.mkdtemp(path.join(os.tmpdir(), "steward-load-")), "load.json");
    const result = await runCli(
      ["load", "--users", "200", "--connections", "4", "--duration", "2s", "--max-p95-ms", "0.001", "--json", file],
      { DATABASE_URL: context.db.url },
      120_000,
    );
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/threshold broken: p95 .* is over --max-p95-ms 0.001/);
    const report = JSON.parse(await fs.readFile(file, "utf8"));
    expect(Object.keys(report)).toEqual(
      expect.arrayContaining(["ops_per_s", "p50_ms", "p95_ms", "p99_ms", "error_rate", "by_op"]),
    );
    expect(Object.keys(report.by_op).sort()).toEqual([
      "enqueue_invalidation",
      "lease",
      "rate_limit_hit",
      "record_requests",
    ]);
    expect(report.error_rate).toBe(0);
    const { rows } = await context.db.pool.query(
      "select count(*)::int as n from pg_database where datname like 'steward_load_%'",
    );
    expect(rows[0].n).toBe(0);
  });
});
