// Delivery under failure: a webhook that is down for a while, a drainer killed mid-delivery, an
// endpoint that redirects, and entries that can never be delivered among good ones.
import http from "node:http";
import type { AddressInfo } from "node:net";
import pg from "pg";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import {
  drainBatch,
  InvalidationDrainer,
  notifySink,
  redactUrl,
  signature,
  webhookSink,
  type Sink,
} from "../src/worker/invalidations.ts";
import { eventually, spawnCli, testLogger, useTestDatabase, withSettings } from "./helpers.ts";

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
        // The drainer records the success and completes the entries after the endpoint answered.
        await eventually(
          async () =>
            (await pool.query("select steward.circuit_state($1) as state", [circuit])).rows[0].state === "closed" &&
            (await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n === 0,
          { what: "a closed circuit and an empty queue" },
        );
      },
    );
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
    const { child, closed } = spawnCli(["worker"], {
      DATABASE_URL: context.db.url,
      STEWARD_SINKS: "webhook",
      STEWARD_WEBHOOK_URL: hanging.url,
      STEWARD_WEBHOOK_TIMEOUT_MS: "600000",
      STEWARD_DRAIN_VISIBILITY_MS: "2000",
      STEWARD_HEALTH_PORT: "0",
      STEWARD_EXAMPLE: "none",
    });
    cleanups.push(async () => {
      child.kill("SIGKILL");
      await closed;
    });
    await pool.query("select steward.enqueue_invalidation('survives:kill')");
    await eventually(async () => hanging.requests > 0, {
      what: "the first worker to start delivering",
      timeoutMs: 30_000,
    });
    child.kill("SIGKILL");
    await closed;

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

describe("the webhook sink's address", () => {
  async function answering(status: number, headers: Record<string, string> = {}) {
    let requests = 0;
    const server = http.createServer((request, response) => {
      requests++;
      request.resume();
      request.on("end", () => response.writeHead(status, headers).end());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => requests };
  }

  it("refuses a redirect: the signed body is not sent on, and the attempt fails with a clear error", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const elsewhere = await answering(200);
    const redirecting = await answering(307, { location: `${elsewhere.base}/collect?key=stolen` });
    await pool.query("select steward.enqueue_invalidation('redirected')");
    const sink = webhookSink({
      url: `${redirecting.base}/hook`,
      secret: "k",
      timeoutMs: 2000,
      circuit: "webhook:redirect-test",
      pool,
    });
    const result = await drainBatch({ pool, sinks: [sink], logger: testLogger(), batchSize: 10, visibilityMs: 30_000 });
    expect(result).toMatchObject({ failed: 1, delivered: 0 });
    expect(redirecting.requests()).toBe(1);
    expect(elsewhere.requests()).toBe(0);
    const { rows } = await pool.query(
      "select attempts, last_error from steward.invalidations where tag = 'redirected'",
    );
    expect(rows).toEqual([
      {
        attempts: 1,
        last_error: `webhook ${redirecting.base}/hook answered 307, a redirect to ${elsewhere.base}/collect?[redacted]; redirects are not followed (the signed body would go to another address): set STEWARD_WEBHOOK_URL to the final address`,
      },
    ]);
    expect((await pool.query("select steward.circuit_state('webhook:redirect-test') as state")).rows[0].state).toBe(
      "closed",
    );
    await pool.query("delete from steward.invalidations");
  });

  it("shows no query string in errors, logs, circuits or dead letters", async () => {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    const failing = await answering(500);
    const url = `${failing.base}/hook?token=s3cret-token`;
    const lines: string[] = [];
    const logger = pino({ level: "debug" }, { write: (line: string) => void lines.push(line) });
    await withSettings(pool, { "invalidations.max_attempts": "1" }, async () => {
      await pool.query("select steward.enqueue_invalidation('secretive')");
      const sink = webhookSink({ url, secret: "k", timeoutMs: 2000, circuit: "webhook:redaction-test", pool });
      const result = await drainBatch({ pool, sinks: [sink], logger, batchSize: 10, visibilityMs: 30_000 });
      expect(result.failed).toBe(1);
    });
    // An address fetch cannot even parse ends up in the error too.
    const unparsable = webhookSink({
      url: "http://exa mple.invalid/hook?token=s3cret-token",
      secret: "k",
      timeoutMs: 2000,
      circuit: "webhook:unparsable",
      pool,
    });
    const thrown = await unparsable.deliver(["x"]).catch((error: Error) => error);
    expect(thrown).toBeInstanceOf(Error);
    expect((thrown as Error).message).toContain("?[redacted]");

    const { rows: dead } = await pool.query(
      "select last_error from steward.dead_letters where payload->>'tag' = 'secretive'",
    );
    expect(dead).toEqual([{ last_error: `webhook ${failing.base}/hook?[redacted] answered 500` }]);
    const { rows: circuits } = await pool.query(
      "select last_error from steward.circuit_status where name in ('webhook:redaction-test', 'webhook:unparsable')",
    );
    expect(circuits).toHaveLength(2);
    const everything = [...lines, (thrown as Error).message, JSON.stringify(dead), JSON.stringify(circuits)].join("\n");
    expect(lines.length).toBeGreaterThan(0);
    expect(everything).not.toContain("s3cret-token");
  });

  it("redacts query, fragment and credentials, and keeps the rest of the address", () => {
    expect(redactUrl("https://user:pw@hooks.example.com:8443/a/b?token=1#x")).toBe(
      "https://hooks.example.com:8443/a/b?[redacted]",
    );
    expect(redactUrl("https://hooks.example.com/a")).toBe("https://hooks.example.com/a");
    expect(redactUrl("not a url?token=1")).toBe("not a url?[redacted]");
    expect(redactUrl("ftp://u:p@host/x?y")).toBe("ftp://host/x?[redacted]");
  });
});

describe("a poison entry", () => {
  // Each way a tag can name nothing to refresh, most of them written where enqueue's check
  // cannot see: by the table's owner directly, or a view unregistered or dropped after enqueue.
  const written = ["mv:a.b.c", "mv:a.b.c.d", "mv:public.never_registered", "mv:", 'mv:"unterminated', "mv:public"];
  const unregistered = "mv:public.poison_unregistered";
  const dropped = "mv:public.poison_dropped";
  const bad = [...written, unregistered, dropped];

  async function setup() {
    const { pool } = context.db;
    await pool.query("delete from steward.invalidations");
    await pool.query("delete from steward.dead_letters where source = 'invalidation'");
    for (const view of ["poison_good", "poison_unregistered", "poison_dropped"]) {
      await pool.query(`
        drop materialized view if exists public.${view};
        create materialized view public.${view} as select 1 as id;
        create unique index on public.${view} (id);
        select steward.register_materialized_view('public.${view}');`);
    }
    await pool.query("insert into steward.invalidations (tag, deliver_at) select t, now() from unnest($1::text[]) t", [
      written,
    ]);
    for (const tag of [unregistered, dropped]) await pool.query("select steward.enqueue_invalidation($1)", [tag]);
    await pool.query("select steward.unregister_materialized_view('public.poison_unregistered')");
    await pool.query("drop materialized view public.poison_dropped"); // still registered, by name
    await pool.query("select steward.enqueue_invalidation('mv:public.poison_good')");
    await pool.query("select steward.enqueue_invalidation('poison:good')");
  }

  async function refreshScheduled(view: string): Promise<boolean> {
    const { rows } = await context.db.pool.query(
      "select last_enqueued_at from steward.materialized_views where view = $1",
      [view],
    );
    return rows[0]?.last_enqueued_at != null;
  }

  it.each(["notify", "webhook"])(
    "never stops delivery through the %s sink: the good tags go out, the bad ones to the dead letters",
    async (sinkName) => {
      const { pool } = context.db;
      await setup();
      let sink: Sink;
      let received: string[];
      if (sinkName === "notify") {
        const listener = new pg.Client({ connectionString: context.db.url });
        await listener.connect();
        cleanups.push(() => listener.end());
        const notified: string[] = [];
        listener.on("notification", (message) => notified.push(...(JSON.parse(message.payload!) as string[])));
        await listener.query("listen steward_poison_test");
        sink = notifySink(pool, "steward_poison_test");
        received = notified;
      } else {
        const hook = await webhookServer("p");
        cleanups.push(() => hook.close());
        sink = webhookSink({ url: hook.url, secret: "p", timeoutMs: 2000, circuit: `webhook:${hook.host}`, pool });
        received = hook.received;
      }
      await withSettings(
        pool,
        {
          "invalidations.max_attempts": "3",
          "invalidations.backoff_base": "10 milliseconds",
          "invalidations.backoff_max": "50 milliseconds",
        },
        async () => {
          const drainer = new InvalidationDrainer({
            url: context.db.url,
            pool,
            sinks: [sink],
            logger: testLogger(),
            batchSize: 100,
            visibilityMs: 30_000,
            pollIntervalMs: 100,
          });
          await drainer.start();
          cleanups.push(() => drainer.stop());
          await eventually(
            async () => received.includes("poison:good") && (await refreshScheduled("public.poison_good")),
            {
              what: "the good tag delivered and the good view's refresh scheduled",
              timeoutMs: 5000,
            },
          );
          await eventually(
            async () => (await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n === 0,
            {
              what: "the queue to empty",
              timeoutMs: 10_000,
            },
          );
        },
      );
      const { rows: dead } = await pool.query(
        "select payload->>'tag' as tag, attempts, last_error from steward.dead_letters where source = 'invalidation' order by 1",
      );
      expect(dead.map((row) => row.tag)).toEqual([...bad].sort());
      for (const row of dead) {
        if (row.tag === dropped) {
          // Registered but gone: a failure that might pass, so it was retried until out of attempts.
          expect(row).toMatchObject({ attempts: 3, last_error: expect.stringContaining("does not exist") });
        } else {
          expect(row).toMatchObject({
            attempts: 1,
            last_error: `${row.tag} names no registered materialized view (mv:<schema>.<view>)`,
          });
        }
      }
      await pool.query("delete from steward.materialized_views where view = 'public.poison_dropped'"); // its view is gone
    },
  );
});
