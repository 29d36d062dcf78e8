// `steward bench --workers`: fleets of worker processes against one database.
import { describe, expect, it } from "vitest";
import { runFleet } from "../bench/fleet.ts";
import { runCli, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

describe("steward bench --workers", () => {
  it("runs every job and drains every tag with two worker processes, and counts the idle fleet's cost", async () => {
    const [two] = await runFleet(context.db.url, [2], {
      quick: true,
      rounds: 1,
      sizes: { jobs: 300, tags: 2000, idleMs: 2000 },
    });
    // runFleet throws unless the processes delivered all 2,000 tags between them.
    expect(two).toMatchObject({ workers: 2 });
    expect(two!.jobsPerSecond).toBeGreaterThan(0);
    expect(two!.tagsPerSecond).toBeGreaterThan(0);
    // Each steward worker holds its graphile-worker pool, LISTEN, /metrics and /readyz connections.
    expect(two!.connections).toBeGreaterThanOrEqual(3);
    expect(two!.idleStatementsPerSecond).toBeGreaterThan(0);
    const { rows } = await context.db.pool.query(
      "select (select count(*)::int from graphile_worker._private_jobs) as jobs, (select count(*)::int from steward.invalidations) as tags",
    );
    expect(rows[0]).toEqual({ jobs: 0, tags: 0 });
  }, 120_000);

  it("exits 2 for a fleet size that is not a positive integer or a scenario other than jobs and drain", async () => {
    const zero = await runCli(["bench", "--workers", "0"]);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toContain("--workers must be an integer from 1 to 64");
    const other = await runCli(["bench", "--workers", "2", "--only", "keyset_vs_offset"]);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain("--workers measures jobs and drain only");
  });
});
