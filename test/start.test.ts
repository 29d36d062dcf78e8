// The front door: `npm start` with no DATABASE_URL on an empty machine, and how it stops.
// The tests share one data folder and run in order, as a newcomer's first day does: the first
// start (shared by the tests up to the first shutdown) initialises the cluster, the later ones
// restart on it. npm runs in a process group of its own, as under a terminal, and signals go to
// the whole group, as Ctrl-C and `kill -TERM -<pgid>` send them.
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { SAME_REQUEST_MS } from "../src/cli/commands/worker.ts";
import { startEmbedded } from "../src/embedded.ts";
import { eventually, freePort, testLogger } from "./helpers.ts";
import { groupAlive, npmStart, readyz, serverProcesses, stewardPid, type NpmStart } from "./npm-start.ts";

// Runs once, on the embedded default path; a TEST_DATABASE_URL run tests another server instead.
describe.skipIf(!inject("embedded"))("npm start without DATABASE_URL", () => {
  let dataDir = "";
  let blocker: net.Server;
  let takenPort = 0;
  let healthPort = 0;
  /** The `npm start` the next test talks to. */
  let running: NpmStart | undefined;
  const cluster = () => path.join(dataDir, "pgdata");

  function start(env: Record<string, string> = {}) {
    running = npmStart({
      env: {
        STEWARD_DATA_DIR: dataDir,
        STEWARD_EMBEDDED_PORT: String(takenPort),
        STEWARD_HEALTH_PORT: String(healthPort),
        STEWARD_EXAMPLE: "none",
        ...env,
      },
    });
    return running;
  }

  async function ready(started: NpmStart) {
    return eventually(() => readyz(healthPort), { timeoutMs: 90_000, intervalMs: 250, what: "/readyz" }).catch(
      (error: Error) => {
        throw new Error(`${error.message}; npm start printed:\n${started.output()}`);
      },
    );
  }

  /** Runs `work` on the cluster: through the running server, or one started for it. */
  async function onCluster<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
    const server = await startEmbedded({ dir: dataDir, preferredPort: 0, logger: testLogger() });
    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end();
      await server.stop();
    }
  }

  /** Starts a refresh of a view that takes `seconds` and waits until a worker runs it. */
  async function runningJob(seconds: number): Promise<string> {
    return onCluster(async (client) => {
      const view = `public.slow_${seconds}`;
      await client.query(
        `create materialized view if not exists ${view} as select 1 as id from pg_catalog.pg_sleep(${seconds}) with no data`,
      );
      await client.query("select steward.register_materialized_view($1, null, false)", [view]);
      const { rows } = await client.query<{ id: string }>(
        "select id::text from graphile_worker.add_job('refresh_materialized_view', json_build_object('view', $1::text))",
        [view],
      );
      const id = rows[0]!.id;
      await eventually(
        async () =>
          (await client.query("select 1 from graphile_worker.jobs where id = $1 and locked_at is not null", [id]))
            .rowCount,
        { timeoutMs: 30_000, what: "the job to run" },
      );
      return id;
    });
  }

  /** Waits for `text` in the output: a child's last lines may arrive after its exit event. */
  async function printed(started: NpmStart, text: string) {
    await eventually(async () => started.output().includes(text), { what: `"${text}" in the output` }).catch(
      (error: Error) => {
        throw new Error(`${error.message}; npm start printed:\n${started.output()}`);
      },
    );
  }

  async function stopsCompletely(started: NpmStart) {
    await printed(started, "embedded PostgreSQL stopped");
    expect(await serverProcesses(cluster())).toEqual([]);
    await eventually(async () => !groupAlive(started.pid), { what: "every process of the group to exit" });
  }

  let coldStartMs = 0;
  beforeAll(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "steward-start-"));
    await fs.chmod(dataDir, 0o755);
    // The preferred embedded port is taken: a free one must be picked.
    blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    takenPort = (blocker.address() as net.AddressInfo).port;
    healthPort = await freePort();
    const began = Date.now();
    // The example is on by default on the embedded database; a small one keeps the test quick.
    await ready(start({ STEWARD_EXAMPLE: "", STEWARD_EXAMPLE_USERS: "200" }));
    coldStartMs = Date.now() - began;
  }, 120_000);

  afterAll(async () => {
    if (running && groupAlive(running.pid)) running.signalGroup("SIGKILL");
    for (const pid of dataDir ? await serverProcesses(cluster()) : []) process.kill(pid, "SIGQUIT");
    blocker?.close();
    if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
    console.info(`cold start to ready: ${coldStartMs} ms`);
  });

  it("initialises an embedded cluster in the data folder on first start", async () => {
    expect(running!.output()).toContain("initialised the embedded PostgreSQL cluster");
    expect(await fs.readFile(path.join(cluster(), "PG_VERSION"), "utf8")).toMatch(/^\d+/);
  });

  it("uses a free port when the preferred embedded port is taken", async () => {
    expect(running!.output()).toContain("preferred port is taken");
    const port = Number((await fs.readFile(path.join(cluster(), "postmaster.pid"), "utf8")).split("\n")[3]);
    expect(port).toBeGreaterThan(0);
    expect(port).not.toBe(takenPort);
  });

  it("answers /readyz with the database, the migrations and the job worker ok", async () => {
    const body = await readyz(healthPort);
    expect(body.status).toMatch(/^(healthy|degraded)$/);
    expect(body.checks).toMatchObject({ database: "ok", migrations: "ok", jobWorker: "ok" });
  });

  it("binds the health server to 127.0.0.1 only", async () => {
    expect(running!.output()).toMatch(/"host":"127\.0\.0\.1"[^\n]*health server listening/);
    const external = Object.values(os.networkInterfaces())
      .flat()
      .filter((address) => address && address.family === "IPv4" && !address.internal);
    for (const address of external) expect(await readyz(healthPort, address!.address)).toBe(false);
  });

  it("installs the health-metrics example on the embedded database", () => {
    expect(running!.output()).toContain("health-metrics example installed");
  });

  it("lets a second steward command use the running server instead of starting another", async () => {
    const attached = await startEmbedded({ dir: dataDir, preferredPort: takenPort, logger: testLogger() });
    expect(attached.owned).toBe(false);
    const client = new pg.Client({ connectionString: attached.url });
    await client.connect();
    await client.query("create table public.survives_restart (id int)");
    await client.end();
  });

  it("on SIGTERM to its process group, lets the running job finish, stops the embedded server and exits 0", async () => {
    const first = running!;
    const job = await runningJob(3);
    const began = Date.now();
    first.signalGroup("SIGTERM");
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - began).toBeLessThan(15_000);
    await stopsCompletely(first);
    const outcome = await onCluster(async (client) => ({
      job: (await client.query("select 1 from graphile_worker.jobs where id = $1", [job])).rowCount,
      refreshed: (await client.query("select status from steward.refresh_log where view = 'public.slow_3'")).rows,
    }));
    expect(outcome).toEqual({ job: 0, refreshed: [{ status: "ok" }] });
  }, 60_000);

  it("starts again on the same cluster without initialising it, and keeps its data", async () => {
    // The next test needs a shutdown timeout shorter than its job.
    const again = start({ STEWARD_SHUTDOWN_TIMEOUT_MS: "1000" });
    await ready(again);
    expect(again.output()).not.toContain("initialised the embedded PostgreSQL cluster");
    const kept = await onCluster(
      async (client) => (await client.query("select to_regclass('public.survives_restart')::text as t")).rows[0].t,
    );
    expect(kept).toBe("survives_restart");
  }, 120_000);

  it("on Ctrl-C (SIGINT to its process group), releases a job that outlives the shutdown timeout, stops the server and exits 0", async () => {
    const second = running!;
    const job = await runningJob(60);
    const steward = await stewardPid(second.pid);
    const began = Date.now();
    second.signalGroup("SIGINT");
    // npm forwards its copy of the signal, usually at once: here always, so the rule is tested.
    expect(steward).toBeDefined();
    process.kill(steward!, "SIGINT");
    expect(await second.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - began).toBeLessThan(15_000);
    await stopsCompletely(second);
    const row = await onCluster(async (client) => {
      const { rows } = await client.query(
        "select locked_at, attempts, last_error from graphile_worker.jobs where id = $1",
        [job],
      );
      // Out of the way of the next start.
      await client.query("select graphile_worker.complete_jobs(array[$1::bigint])", [job]);
      return rows[0];
    });
    expect(row).toMatchObject({ locked_at: null, attempts: 1 });
    expect(row.last_error).toBeTruthy();
  }, 60_000);

  it(`forces an exit on a second Ctrl-C ${SAME_REQUEST_MS / 1000} s or more after the first, and still stops the embedded server`, async () => {
    const third = start({ STEWARD_SHUTDOWN_TIMEOUT_MS: "60000" });
    await ready(third);
    await runningJob(60);
    third.signalGroup("SIGINT");
    // A person pressing Ctrl-C again: the pause is the behaviour under test.
    await new Promise((resolve) => setTimeout(resolve, SAME_REQUEST_MS + 1000));
    expect(groupAlive(third.pid)).toBe(true);
    third.signalGroup("SIGINT");
    const exit = await third.exited;
    expect(exit.code === 0 && exit.signal === null).toBe(false);
    await printed(third, "forced exit");
    await eventually(async () => (await serverProcesses(cluster())).length === 0, {
      what: "the embedded server to stop",
    });
    await eventually(async () => !groupAlive(third.pid), { what: "every process of the group to exit" });
  }, 120_000);

  it("on Ctrl-C while starting, finishes the step under way, stops the server and exits 0", async () => {
    const fourth = start();
    await eventually(async () => fourth.output().includes("embedded PostgreSQL is up"), {
      timeoutMs: 60_000,
      intervalMs: 20,
      what: "the server",
    });
    fourth.signalGroup("SIGINT");
    expect(await fourth.exited).toEqual({ code: 0, signal: null });
    await stopsCompletely(fourth);
  }, 120_000);
});
