// The front door: `npm start` with no DATABASE_URL on an empty machine.
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { startEmbedded } from "../src/embedded.ts";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { eventually, freePort, testLogger } from "./helpers.ts";

/**
 * `npm start` itself, as a person or a supervisor runs it: a SIGTERM sent to npm must reach the
 * worker (the start script execs node, so no shell in between swallows it).
 */
function start(dataDir: string, env: Record<string, string>) {
  const child = spawn("npm", ["start", "--silent"], {
    cwd: PACKAGE_ROOT,
    env: { ...process.env, DATABASE_URL: "", STEWARD_DATA_DIR: dataDir, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  return { child, exited, output: () => output };
}

async function readyz(port: number) {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`);
    return response.status === 200 ? await response.json() : false;
  } catch {
    return false;
  }
}

// Runs once, on the embedded default path; a TEST_DATABASE_URL run tests another server instead.
describe.skipIf(!inject("embedded"))("steward start without DATABASE_URL", () => {
  let dataDir = "";
  afterAll(async () => {
    if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
  });

  it("starts an embedded server on a free port, is ready, stops on SIGTERM with 0, and keeps its data", async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "steward-start-"));
    await fs.chmod(dataDir, 0o755);
    // The preferred embedded port is taken: a free one must be picked.
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const takenPort = (blocker.address() as net.AddressInfo).port;
    const healthPort = await freePort();
    // The example is on by default here (embedded database); a small one keeps the test quick.
    const env = {
      STEWARD_EMBEDDED_PORT: String(takenPort),
      STEWARD_HEALTH_PORT: String(healthPort),
      STEWARD_EXAMPLE_USERS: "200",
    };
    try {
      const began = Date.now();
      const first = start(dataDir, env);
      const body = await eventually(() => readyz(healthPort), {
        timeoutMs: 90_000,
        intervalMs: 250,
        what: "/readyz",
      }).catch((error: Error) => {
        throw new Error(`${error.message}; steward start printed:\n${first.output()}`);
      });
      const coldStartMs = Date.now() - began;
      expect(body.checks).toMatchObject({
        database: { status: "ok" },
        migrations: { status: "ok" },
        worker: { status: "ok" },
      });
      expect(first.output()).toContain("initialised the embedded PostgreSQL cluster");
      expect(first.output()).toContain("preferred port is taken");
      expect(first.output()).toContain("health-metrics example installed");

      // A second process (a person running `steward run`) attaches to the running server.
      const attached = await startEmbedded({ dir: dataDir, preferredPort: takenPort, logger: testLogger() });
      expect(attached.owned).toBe(false);
      const client = new pg.Client({ connectionString: attached.url });
      await client.connect();
      await client.query("create table public.survives_restart (id int)");
      await client.end();

      const stopBegan = Date.now();
      first.child.kill("SIGTERM");
      expect(await first.exited).toEqual({ code: 0, signal: null });
      expect(Date.now() - stopBegan).toBeLessThan(15_000);
      expect(first.output()).toContain("embedded PostgreSQL stopped");

      const second = start(dataDir, env);
      await eventually(() => readyz(healthPort), { timeoutMs: 90_000, intervalMs: 250, what: "/readyz again" });
      expect(second.output()).not.toContain("initialised the embedded PostgreSQL cluster");
      const again = await startEmbedded({ dir: dataDir, preferredPort: takenPort, logger: testLogger() });
      const check = new pg.Client({ connectionString: again.url });
      await check.connect();
      const { rows } = await check.query("select to_regclass('public.survives_restart')::text as table");
      await check.end();
      expect(rows[0].table).toBe("survives_restart");
      second.child.kill("SIGINT");
      expect(await second.exited).toEqual({ code: 0, signal: null });
      console.info(`cold start to ready: ${coldStartMs} ms`);
    } finally {
      blocker.close();
    }
  }, 240_000);
});
