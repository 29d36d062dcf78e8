import { describe, expect, it } from "vitest";
import { isLoopback } from "../src/commands/load.ts";
import { breaches, quantile, runLoad } from "../src/load.ts";
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
});
