// Delivery under failure: a webhook that is down for a while, and a drainer killed mid-delivery.
import { spawn } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { drainBatch, InvalidationDrainer, signature, webhookSink } from "../src/worker/invalidations.ts";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { eventually, testLogger, useTestDatabase, withSettings } from "./helpers.ts";

const context = useTestDatabase();

interface Hook {
  url: string;
  host: string;
  received: string[];
  requests: number;
  /** What the next requests get: a status, or "hang" (never answer). */
  mode: number | "hang";
  signatures: Array<{ header: string | undefined; expected: string }>;
  close(): Promise<void>;
}

async function webhookServer(secret: string): Promise<Hook> {
  const hook = {
    received: [] as string[],
    requests: 0,
    mode: 200 as number | "hang",
    signatures: [] as Hook["signatures"],
  };
  const hanging: http.ServerResponse[] = [];
  const server = http.createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      hook.requests++;
      if (hook.mode === "hang") {
        hanging.push(response);
        return;
      }
      if (hook.mode >= 200 && hook.mode < 300) {
        hook.received.push(...(JSON.parse(body) as { tags: string[] }).tags);
        const timestamp = String(request.headers["x-steward-timestamp"]);
        hook.signatures.push({
          header: request.headers["x-steward-signature"] as string | undefined,
          expected: signature(secret, timestamp, body),
        });
      }
      response.writeHead(hook.mode).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(hook, {
    url: `http://127.0.0.1:${port}/invalidate`,
    host: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        hanging.forEach((response) => response.destroy());
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

let cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

describe("the webhook sink", () => {
  it("delivers every tag to an endpoint that was down for a while, opening its circuit in between", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const hook = await webhookServer("s3cret");
    cleanups.push(() => hook.close());
    const circuit = `webhook:${hook.host}`;
    await pool.query("select steward.circuit_configure($1, failure_threshold => 2, cooldown => '1 second')", [circuit]);
    hook.mode = 503;
    const tags = Array.from({ length: 40 }, (_, i) => `product:${i}`);
    await pool.query("select steward.enqueue_invalidations($1::text[])", [tags]);

    await withSettings(
      pool,
      { "invalidations.backoff_base": "100 milliseconds", "invalidations.backoff_max": "300 milliseconds" },
      async () => {
        const drainer = new InvalidationDrainer({
          url: context.db.url,
          pool,
          sinks: [webhookSink({ url: hook.url, secret: "s3cret", timeoutMs: 2000, circuit, pool })],
          logger: testLogger(),
          batchSize: 500,
          visibilityMs: 30_000,
          pollIntervalMs: 100,
        });
        await drainer.start();
        cleanups.push(() => drainer.stop());
        await eventually(
          async () =>
            (await pool.query("select steward.circuit_state($1) as state", [circuit])).rows[0].state === "open",
          { what: "the circuit to open", timeoutMs: 15_000 },
        );
        const requestsWhileOpen = hook.requests;
        hook.mode = 200;
        await eventually(async () => tags.every((tag) => hook.received.includes(tag)), {
          what: "every tag",
          timeoutMs: 20_000,
        });
        // The open circuit kept the drainer from calling: only the half-open probe got through first.
        expect(requestsWhileOpen).toBeGreaterThanOrEqual(2);
      },
    );
    expect((await pool.query("select steward.circuit_state($1) as state", [circuit])).rows[0].state).toBe("closed");
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBe(0);
    expect(hook.signatures.every((s) => s.header === s.expected)).toBe(true);
  });

  it("honours Retry-After: the batch is not retried before the sink asked", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const server = http.createServer((_request, response) => response.writeHead(429, { "retry-after": "120" }).end());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    await pool.query("select steward.enqueue_invalidation('throttled')");
    const sink = webhookSink({ url, secret: "k", timeoutMs: 2000, circuit: "webhook:throttled", pool });
    const result = await drainBatch({ pool, sinks: [sink], logger: testLogger(), batchSize: 10, visibilityMs: 30_000 });
    expect(result.failed).toBe(1);
    const { rows } = await pool.query(
      "select extract(epoch from deliver_at - now())::int as wait, attempts, last_error from steward.invalidations where tag = 'throttled'",
    );
    expect(rows[0].wait).toBeGreaterThanOrEqual(115);
    expect(rows[0].wait).toBeLessThanOrEqual(120);
    expect(rows[0]).toMatchObject({ attempts: 1, last_error: expect.stringContaining("429") });
  });
});

describe("a drainer killed mid-delivery", () => {
  it("loses nothing: the entry is delivered by another drainer after its visibility timeout", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const hanging = await webhookServer("x");
    hanging.mode = "hang";
    cleanups.push(() => hanging.close());
    const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, "bin", "steward.js"), "worker"], {
      env: {
        ...process.env,
        DATABASE_URL: context.db.url,
        STEWARD_SINKS: "webhook",
        STEWARD_WEBHOOK_URL: hanging.url,
        STEWARD_WEBHOOK_TIMEOUT_MS: "600000",
        STEWARD_DRAIN_VISIBILITY_MS: "2000",
        STEWARD_HEALTH_PORT: "0",
        STEWARD_EXAMPLE: "none",
        LOG_LEVEL: "warn",
      },
      stdio: "ignore",
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    cleanups.push(async () => {
      child.kill("SIGKILL");
      await exited;
    });
    await pool.query("select steward.enqueue_invalidation('survives:kill')");
    await eventually(async () => hanging.requests > 0, {
      what: "the first worker to start delivering",
      timeoutMs: 30_000,
    });
    child.kill("SIGKILL");
    await exited;

    const working = await webhookServer("x");
    cleanups.push(() => working.close());
    const drainer = new InvalidationDrainer({
      url: context.db.url,
      pool,
      sinks: [
        webhookSink({ url: working.url, secret: "x", timeoutMs: 2000, circuit: `webhook:${working.host}`, pool }),
      ],
      logger: testLogger(),
      batchSize: 10,
      visibilityMs: 30_000,
      pollIntervalMs: 200,
    });
    await drainer.start();
    cleanups.push(() => drainer.stop());
    await eventually(async () => working.received.includes("survives:kill"), { what: "redelivery", timeoutMs: 20_000 });
    // The sink records the tag before it answers; the drainer deletes the entry after the answer.
    await eventually(
      async () => (await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n === 0,
      { what: "the delivered entry to be deleted", timeoutMs: 20_000 },
    );
  });
});
