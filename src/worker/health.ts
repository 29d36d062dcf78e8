// The worker's HTTP server: /healthz (alive), /readyz (ready to work), /metrics (Prometheus).
import http from "node:http";
import type { AddressInfo } from "node:net";
import type pg from "pg";
import type { Logger } from "../logger.ts";
import type { Metrics } from "./metrics.ts";
import { migrationStatus } from "../migrate.ts";

export interface HealthServer {
  port: number;
  close(): Promise<void>;
}

export interface HealthOptions {
  port: number;
  host: string;
  pool: pg.Pool;
  metrics: Metrics;
  logger: Logger;
  /** Whether the worker is running (false once shutdown began). */
  isRunning(): boolean;
}

interface Check {
  status: "ok" | "fail";
  [detail: string]: unknown;
}

const DATABASE_TIMEOUT_MS = 1000;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function readiness(options: HealthOptions): Promise<Record<string, Check>> {
  const checks: Record<string, Check> = {};
  const began = Date.now();
  try {
    await withTimeout(options.pool.query("select 1"), DATABASE_TIMEOUT_MS, "the database");
    checks.database = { status: "ok", ms: Date.now() - began };
  } catch (error) {
    checks.database = { status: "fail", error: (error as Error).message };
  }
  if (checks.database.status === "ok") {
    try {
      const status = await withTimeout(migrationStatus(options.pool), DATABASE_TIMEOUT_MS, "the migration check");
      checks.migrations = status.current
        ? { status: "ok", steward: status.lastApplied, graphile_worker: status.workerSchema }
        : {
            status: "fail",
            error: "migrations are behind this version of pg-steward: run `steward migrate`",
            ...status,
          };
    } catch (error) {
      checks.migrations = { status: "fail", error: (error as Error).message };
    }
  } else {
    checks.migrations = { status: "fail", error: "database unreachable" };
  }
  checks.worker = options.isRunning() ? { status: "ok" } : { status: "fail", error: "worker is not running" };
  return checks;
}

function send(response: http.ServerResponse, status: number, body: string, type = "application/json") {
  response.writeHead(status, { "content-type": type, "cache-control": "no-store" });
  response.end(body);
}

export async function startHealthServer(options: HealthOptions): Promise<HealthServer> {
  const server = http.createServer(async (request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    try {
      if (request.method !== "GET" && request.method !== "HEAD") {
        send(response, 405, JSON.stringify({ error: "only GET" }));
      } else if (url.pathname === "/healthz") {
        send(response, 200, JSON.stringify({ status: "ok", timestamp: new Date().toISOString() }));
      } else if (url.pathname === "/readyz") {
        const checks = await readiness(options);
        const ok = Object.values(checks).every((check) => check.status === "ok");
        const body = { status: ok ? "ok" : "fail", timestamp: new Date().toISOString(), checks };
        send(response, ok ? 200 : 503, JSON.stringify(body));
      } else if (url.pathname === "/metrics") {
        send(response, 200, await options.metrics.registry.metrics(), options.metrics.registry.contentType);
      } else {
        send(response, 404, JSON.stringify({ error: "not found", paths: ["/healthz", "/readyz", "/metrics"] }));
      }
    } catch (error) {
      options.logger.error({ err: error, path: url.pathname }, "health server request failed");
      send(response, 500, JSON.stringify({ status: "fail", error: (error as Error).message }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  options.logger.info({ port, host: options.host }, "health server listening");
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
