import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { useTestDatabase } from "./helpers.ts";

// The hand-run queries in sql/ are run the way a DBA runs them, with psql; where psql is not
// installed there is nothing to run them with.
const psql = spawnSync("psql", ["--version"]).status === 0;
const context = useTestDatabase();
const files = fs.readdirSync(path.join(PACKAGE_ROOT, "sql")).filter((file) => file.endsWith(".sql"));

function run(file: string) {
  return spawnSync(
    "psql",
    ["-X", "-v", "ON_ERROR_STOP=1", "-d", context.db.url, "-f", path.join(PACKAGE_ROOT, "sql", file)],
    {
      encoding: "utf8",
      timeout: 30_000,
    },
  );
}

beforeAll(async () => {
  // Something for each query to show.
  await context.db.pool.query(`
    update steward.settings set value = '0 seconds' where name = 'request_metrics.hourly_refresh';
    select graphile_worker.add_job('monitoring_test', '{}'::json);
    select steward.record_requests('[{"endpoint": "/a", "method": "GET", "status": 200, "duration_ms": 3}]');
    select steward.rollup_requests();`);
});

describe.skipIf(!psql)("the DBA queries in sql/", () => {
  it("each starts with a comment saying what it answers", () => {
    expect(files.length).toBeGreaterThanOrEqual(6);
    for (const file of files) {
      const header = fs.readFileSync(path.join(PACKAGE_ROOT, "sql", file), "utf8").match(/^(-- .*\n)+/)?.[0];
      expect(header, file).toMatch(/\?/);
    }
  });

  it.each(files)("%s runs with psql against a migrated database", (file) => {
    const result = run(file);
    expect(result.stderr, file).toBe("");
    expect(result.status, file).toBe(0);
  });

  it("queue_health shows jobs by task and state", () => {
    expect(run("queue-health.sql").stdout).toMatch(/monitoring_test\s*\|\s*ready\s*\|\s*1/);
  });

  it("slow_statements explains what to do when pg_stat_statements is missing", async () => {
    const { rows } = await context.db.pool.query(
      "select count(*)::int as n from pg_extension where extname = 'pg_stat_statements'",
    );
    expect(run("slow-statements.sql").stdout).toContain(
      rows[0].n ? "Top 20 statements by total execution time" : "pg_stat_statements is not installed",
    );
  });

  it("request_stats shows the rolled-up endpoints", () => {
    expect(run("request-stats.sql").stdout).toMatch(/\/a\s*\|\s*GET\s*\|\s*1\s*\|\s*0/);
  });
});
