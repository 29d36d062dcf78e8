import { execFileSync, spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { eventually, runCli, spawnCli, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

async function counts() {
  const { rows } = await context.db.pool.query(
    "select (select count(*)::int from graphile_worker.jobs) as jobs, (select count(*)::int from steward.audit_log) as audits",
  );
  return rows[0];
}

/** A Node older than 22.18 installed on this machine (the system Node here is 20), if any. */
const OLD_NODE = ["/usr/bin/node", "/usr/local/bin/node"].find((candidate) => {
  try {
    const [major, minor] = execFileSync(candidate, ["-p", "process.versions.node"], { encoding: "utf8" })
      .split(".")
      .map(Number);
    return major! < 22 || (major === 22 && minor! < 18);
  } catch {
    return false;
  }
});

describe("steward (command line)", () => {
  it("prints usage and exits 2 with no command", async () => {
    const result = await runCli([]);
    expect(result.code).toBe(2);
    expect(result.stdout).toContain("usage: steward <command>");
  });

  it("exits 2 naming an unknown command", async () => {
    const result = await runCli(["frobnicate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown command "frobnicate"');
  });

  it("exits 2 on an unknown option, with the command's usage", async () => {
    const result = await runCli(["migrate", "--force"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("usage: steward migrate");
  });

  it("exits 2 on a setting it cannot use, naming the variable", async () => {
    const result = await runCli(["migrate"], { STEWARD_CONCURRENCY: "lots" });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("STEWARD_CONCURRENCY must be an integer");
  });

  it("refuses a payload that is not JSON before enqueueing anything", async () => {
    const before = await counts();
    const result = await runCli(["run", "cleanup", "{tables: x}"], { DATABASE_URL: context.db.url });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("the payload is not JSON");
    expect(await counts()).toEqual(before);
  });

  it("refuses a payload the task itself would refuse, before enqueueing or auditing anything", async () => {
    const before = await counts();
    const results = await Promise.all([
      runCli(["run", "vacuum_tables", '{"bogus": 1}'], { DATABASE_URL: context.db.url }),
      runCli(["run", "refresh_materialized_view", "{}"], { DATABASE_URL: context.db.url }),
      runCli(["run", "recalculate", '{"name": "x", "keys": "all"}'], { DATABASE_URL: context.db.url }),
    ]);
    expect(results.map((result) => result.code)).toEqual([2, 2, 2]);
    expect(results[0]!.stderr).toContain(
      'steward run: vacuum_tables: unknown payload field "bogus"; it takes "tables"',
    );
    expect(results[1]!.stderr).toContain('refresh_materialized_view: "view" must be a non-empty string, got undefined');
    expect(results[2]!.stderr).toContain('recalculate: "keys" must be an array');
    for (const result of results) expect(result.stderr).toContain("usage: steward run");
    expect(await counts()).toEqual(before);
  }, 90_000);

  it("refuses an unknown task before enqueueing anything", async () => {
    const before = await counts();
    const result = await runCli(["run", "no_such_task", "{}"], { DATABASE_URL: context.db.url });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown task "no_such_task"');
    expect(await counts()).toEqual(before);
  });

  it("migrates an up-to-date database again without error", async () => {
    const result = await runCli(["migrate"], { DATABASE_URL: context.db.url });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^migrated: steward \d{6}\.sql, graphile_worker \d+/);
  });

  it.skipIf(!OLD_NODE)(
    "refuses to start on a Node older than 22.18 (exit 2), saying which Node it needs and what brings it",
    () => {
      const result = spawnSync(OLD_NODE!, [path.join(PACKAGE_ROOT, "bin", "steward.js"), "status"], {
        encoding: "utf8",
      });
      expect(result.status).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(
        /^steward needs Node 22\.18 or newer, and this is Node \d+\.\d+\.\d+; .*`npx steward` and the npm scripts/,
      );
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
    },
  );

  it("exits 1 with the database's message when it cannot connect", async () => {
    const result = await runCli(["migrate"], { DATABASE_URL: "postgres://nobody:x@127.0.0.1:1/none" });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/steward migrate: .*ECONNREFUSED/);
  });

  it("stops the worker gracefully on SIGHUP (its terminal closed), as on SIGTERM", async () => {
    const { child, output, closed } = spawnCli(["worker"], {
      DATABASE_URL: context.db.url,
      STEWARD_HEALTH_PORT: "0",
      STEWARD_EXAMPLE: "none",
      LOG_LEVEL: "info",
    });
    try {
      const alive = async () =>
        (await context.db.pool.query("select 1 from steward.workers where pid = $1", [child.pid])).rowCount === 1;
      await eventually(alive, { what: "the worker's heartbeat row", timeoutMs: 30_000 });
      child.kill("SIGHUP");
      // Node's default for SIGHUP is to die at once (signal SIGHUP, no code), leaving the row.
      expect(await closed, output().stderr).toEqual({ code: 0, signal: null });
      expect(output().stdout + output().stderr).toMatch(/"signal":"SIGHUP".*shutting down gracefully/);
      expect(await alive()).toBe(false);
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});
