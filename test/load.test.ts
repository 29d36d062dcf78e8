import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isLoopback, parseStages } from "../src/cli/commands/load.ts";
import { breaches, quantile, runLoad } from "../bench/load.ts";
import { runCli, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
const folders: string[] = [];
afterAll(() => Promise.all(folders.map((folder) => fs.rm(folder, { recursive: true, force: true }))));

/** A file in a folder of its own, removed after the tests. */
async function scratchFile(name: string): Promise<string> {
  const folder = await fs.mkdtemp(path.join(os.tmpdir(), "steward-load-"));
  folders.push(folder);
  return path.join(folder, name);
}

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
    const { pool } = context.db;
    const report = await runLoad(
      [
        { name: "select", weight: 3, run: () => (calls++, pool.query("select 1")) },
        { name: "broken", weight: 1, run: () => (calls++, pool.query("select 1/0")) },
      ],
      { kind: "flat", users: 100, connections: 8, durationMs: 60_000 },
      { maxOperations: 400 },
    );
    expect(calls).toBe(400);
    expect(report.count + report.errors).toBe(400);
    expect(report.by_op.broken!.count).toBe(0);
    expect(report.errors).toBe(report.by_op.broken!.errors);
    expect(report.error_rate).toBeCloseTo(report.errors / 400);
    expect(report.sample_errors).toEqual(["broken: division by zero"]);
    expect(report.stages).toHaveLength(1);
    expect(report.stages[0]).toMatchObject({ stage: 1, from_users: 100, to_users: 100, count: report.count });
    expect(breaches(report, { maxErrorRate: 0.01 })).toHaveLength(1);
    expect(breaches(report, { maxErrorRate: 1, maxP95Ms: 60_000 })).toEqual([]);
  });

  it("ramps simulated users stage by stage, each calling once per think time, and reports each stage", async () => {
    const callers = new Set<number>();
    const perStage: number[][] = [[], [], []];
    const began = performance.now();
    const report = await runLoad(
      [
        {
          name: "noop",
          weight: 1,
          run: async (user) => {
            callers.add(user);
            const elapsed = performance.now() - began;
            perStage[elapsed < 1000 ? 0 : elapsed < 2500 ? 1 : 2]!.push(user);
          },
        },
      ],
      {
        kind: "stages",
        stages: [
          { users: 20, durationMs: 1000 },
          { users: 60, durationMs: 1500 },
          { users: 0, durationMs: 1000 },
        ],
        thinkMs: 100,
      },
    );
    expect(report.stages.map((stage) => [stage.stage, stage.from_users, stage.to_users])).toEqual([
      [1, 0, 20],
      [2, 20, 60],
      [3, 60, 0],
    ]);
    expect(report.stages.reduce((sum, stage) => sum + stage.count, 0)).toBe(report.count);
    // Users up to 59 took part (the last few may be ramped down before their first call), none
    // beyond; the first stage never had more than 20.
    expect(Math.max(...callers)).toBeLessThanOrEqual(59);
    expect(Math.max(...callers)).toBeGreaterThan(50);
    expect(Math.max(...perStage[0]!)).toBeLessThan(20);
    // About users / think time calls a second at the peak: 60 users every 100 ms is 600/s, far
    // above the ramp's start and end.
    const rate = (stage: number) => report.stages[stage]!.ops_per_s;
    expect(rate(1)).toBeGreaterThan(rate(0));
    expect(rate(1)).toBeGreaterThan(rate(2));
    expect(rate(1)).toBeLessThan(700);
    expect(report.duration_s).toBeGreaterThanOrEqual(3.5);
    const slow = { ...report, stages: report.stages.map((s, i) => (i === 1 ? { ...s, p95_ms: 5000 } : s)) };
    expect(breaches(slow, { maxP95Ms: 2000 })).toEqual(["stage 2: p95 5000 ms is over --max-p95-ms 2000"]);
  });

  it("reads stages as users:duration with a unit, and refuses anything else", () => {
    expect(parseStages("1000:2m,5000:5m,10000:12m")).toEqual([
      { users: 1000, durationMs: 120_000 },
      { users: 5000, durationMs: 300_000 },
      { users: 10_000, durationMs: 720_000 },
    ]);
    expect(() => parseStages("1000")).toThrow('--stages: "1000" is not users:duration');
    expect(() => parseStages("1000:120")).toThrow("--stages needs a unit");
    expect(() => parseStages("0:1m")).toThrow("some stage must have users");
    expect(() => parseStages("2000000:1m")).toThrow("at most 1000000 users a stage");
  });

  it("accepts only loopback servers", () => {
    expect(isLoopback("postgres://u:p@127.0.0.1:5432/db")).toBe(true);
    expect(isLoopback("postgres://u:p@localhost/db")).toBe(true);
    expect(isLoopback("postgres://u:p@[::1]:5432/db")).toBe(true);
    expect(isLoopback("postgres://u:p@db.internal:5432/db")).toBe(false);
  });

  it("exits 2 on a remote DATABASE_URL, an unbounded duration or mixed modes, before connecting", async () => {
    const env = { DATABASE_URL: context.db.url };
    const [remote, long, ramp, mixed] = await Promise.all([
      runCli(["load", "--duration", "5s"], { DATABASE_URL: "postgres://u:p@db.example.com/app" }),
      runCli(["load", "--duration", "2h"], env),
      runCli(["load", "--stages", "1000:20m,5000:15m"], env),
      runCli(["load", "--stages", "10:5s", "--users", "10"], env),
    ]);
    expect([remote.code, long.code, ramp.code, mixed.code]).toEqual([2, 2, 2, 2]);
    expect(remote.stderr).toContain("loopback");
    expect(long.stderr).toContain("--duration must be from 1s to 30m");
    expect(ramp.stderr).toContain("--stages: the stages last 35m00s together; at most 30m");
    expect(mixed.stderr).toContain("--users goes with a flat run, not with --stages");
  }, 90_000);

  it("--http drives the Recall service: 429s counted apart from errors with their share, and each stage's cache hit rate", async () => {
    const file = await scratchFile("load-http.json");
    // 10 users calling every 50 ms: each passes its 10 a minute within a second, so 429s come,
    // even when a loaded machine takes a few hundred milliseconds to answer each call.
    const result = await runCli(
      ["load", "--http", "--stages", "10:2s,10:3s", "--think", "50ms", "--max-error-rate", "0.01", "--json", file],
      { DATABASE_URL: context.db.url },
      120_000,
    );
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/stage .* 429s +429 share +cache hits/);
    expect(result.stdout).toMatch(/\d+ calls refused with 429 \(\d+\.\d % of all calls, not errors\)/);
    const report = JSON.parse(await fs.readFile(file, "utf8"));
    expect(Object.keys(report.by_op).sort()).toEqual(["batch", "message_page", "resolve"]);
    expect(report.error_rate).toBe(0);
    expect(report.limited).toBeGreaterThan(0);
    // The share of all calls, whatever the pace the machine allowed.
    expect(report.limited_share).toBeCloseTo(report.limited / (report.count + report.errors + report.limited), 2);
    // At most 10 a minute per user got through, whatever the pace: 10 users, 100 calls.
    expect(report.count).toBeLessThanOrEqual(100);
    for (const stage of report.stages) expect(stage.probe.hits + stage.probe.misses).toBeGreaterThan(0);
  }, 150_000);

  it("runs every operation against a scratch database while a worker drains, writes the JSON, and exits 1 on a broken threshold", async () => {
    const file = await scratchFile("load.json");
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
      expect.arrayContaining(["ops_per_s", "p50_ms", "p95_ms", "p99_ms", "error_rate", "by_op", "stages"]),
    );
    expect(Object.keys(report.by_op).sort()).toEqual([
      "batch_insert",
      "circuit",
      "enqueue_invalidation",
      "lease",
      "page",
      "rate_limit_hit",
      "record_requests",
    ]);
    for (const [name, figures] of Object.entries(report.by_op)) {
      expect({ name, count: (figures as { count: number }).count }).not.toMatchObject({ count: 0 });
    }
    expect(report.error_rate).toBe(0);
    const { rows } = await context.db.pool.query(
      "select count(*)::int as n from pg_database where datname like 'steward_load_%'",
    );
    expect(rows[0].n).toBe(0);
  }, 150_000);

  it("passes the checklists' thresholds on a short ramp, reporting each stage", async () => {
    const file = await scratchFile("ramp.json");
    const result = await runCli(
      [
        "load",
        "--stages",
        "20:2s,60:3s,20:2s",
        "--think",
        "100ms",
        "--max-p95-ms",
        "2000",
        "--max-error-rate",
        "0.01",
        "--json",
        file,
      ],
      { DATABASE_URL: context.db.url },
      120_000,
    );
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      /^stage\s+users\s+seconds\s+calls\s+ops\/s\s+p50 ms\s+p95 ms\s+p99 ms\s+errors\n\s*1\s+0→20\s/,
    );
    const report = JSON.parse(await fs.readFile(file, "utf8"));
    expect(report.stages.map((stage: { to_users: number }) => stage.to_users)).toEqual([20, 60, 20]);
    expect(report.stages[1].by_op.page.count).toBeGreaterThan(0);
    expect(report.error_rate).toBeLessThanOrEqual(0.01);
  }, 150_000);
});
