// The worker's HTTP server: /healthz (alive), /readyz and its alias /health (ready to work, in
// the deployment checklists' shape), /metrics (Prometheus).
//
// /readyz asks the database on a pool of its own (one connection), so a busy job pool or a slow
// scrape never delays it; concurrent requests share one check. Its body carries states and
// counts only: error messages and addresses go to the log.
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
  /** The readiness checks' own pool: one connection, never shared with jobs or scrapes. */
  pool: pg.Pool;
  metrics: Metrics;
  logger: Logger;
  /** How long each readiness step may take before it counts as failed (default 2000 ms). */
  timeoutMs?: number;
  /** Whether the worker is running (false once shutdown began). */
  isRunning(): boolean;
}

export type CheckStatus = "ok" | "warn" | "fail";
export type HealthStatus = "healthy" | "degraded" | "unhealthy";

/** The checks in the order the body lists them; the database's three come from steward.health_checks(). */
const CHECKS = ["database", "migrations", "jobWorker", "deadLetters", "invalidations", "views"] as const;
type CheckName = (typeof CHECKS)[number];

export interface Readiness {
  status: HealthStatus;
  timestamp: string;
  checks: Record<CheckName, CheckStatus>;
  details: Partial<Record<CheckName, Record<string, unknown>>>;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** unhealthy when a check fails (503), degraded when one warns, else healthy. */
function overallStatus(checks: Record<string, CheckStatus>): HealthStatus {
  const states = Object.values(checks);
  if (states.includes("fail")) return "unhealthy";
  if (states.includes("warn")) return "degraded";
  return "healthy";
}

async function readiness(options: HealthOptions): Promise<Readiness> {
  const { pool, logger } = options;
  const timeoutMs = options.timeoutMs ?? 2000;
  const checks = {} as Record<CheckName, CheckStatus>;
  const details: Readiness["details"] = {};
  const failed = (check: CheckName, error: unknown) => {
    checks[check] = "fail";
    logger.warn({ err: error, check }, "readiness check failed");
  };

  const began = performance.now();
  try {
    await withTimeout(pool.query("select 1"), timeoutMs, "the database");
    checks.database = "ok";
    details.database = { latencyMs: Math.round(performance.now() - began) };
  } catch (error) {
    failed("database", error);
  }

  if (checks.database === "ok") {
    try {
      const status = await withTimeout(migrationStatus(pool), timeoutMs, "the migration check");
      checks.migrations = status.current ? "ok" : "fail";
      details.migrations = {
        steward: status.lastApplied,
        expectedSteward: status.lastCommitted,
        graphileWorker: status.workerSchema,
        expectedGraphileWorker: status.expectedWorkerSchema,
      };
      if (!status.current)
        logger.warn({ ...status }, "migrations are behind this version of pg-steward: run `steward migrate`");
    } catch (error) {
      failed("migrations", error);
    }
    try {
      const { rows } = await withTimeout(
        pool.query<{ name: CheckName; status: CheckStatus; details: Record<string, unknown> }>(
          "select name, status, details from steward.health_checks()",
        ),
        timeoutMs,
        "steward.health_checks()",
      );
      for (const row of rows) {
        checks[row.name] = row.status;
        details[row.name] = row.details;
      }
    } catch (error) {
      logger.warn({ err: error }, "readiness checks of the database failed");
      for (const check of ["deadLetters", "invalidations", "views"] as const) checks[check] = "fail";
    }
  } else {
    for (const check of ["migrations", "deadLetters", "invalidations", "views"] as const) checks[check] = "fail";
  }
  checks.jobWorker = options.isRunning() ? "ok" : "fail";
  for (const check of CHECKS) checks[check] ??= "fail";

  const ordered = Object.fromEntries(CHECKS.map((check) => [check, checks[check]])) as Readiness["checks"];
  return { status: overallStatus(ordered), timestamp: new Date().toISOString(), checks: ordered, details };
}

function send(response: http.ServerResponse, status: number, body: string, type = "application/json") {
  response.writeHead(status, { "content-type": type, "cache-control": "no-store" });
  response.end(body);
}

export async function startHealthServer(options: HealthOptions): Promise<HealthServer> {
  // Concurrent readiness requests share the check in progress.
  let checking: Promise<Readiness> | undefined;
  const check = () => (checking ??= readiness(options).finally(() => (checking = undefined)));

  const server = http.createServer(async (request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    try {
      if (request.method !== "GET" && request.method !== "HEAD") {
        send(response, 405, JSON.stringify({ error: "only GET" }));
      } else if (url.pathname === "/healthz") {
        send(response, 200, JSON.stringify({ status: "ok", timestamp: new Date().toISOString() }));
      } else if (url.pathname === "/readyz" || url.pathname === "/health") {
        const body = await check();
        send(response, body.status === "unhealthy" ? 503 : 200, JSON.stringify(body));
      } else if (url.pathname === "/metrics") {
        send(response, 200, await options.metrics.scrape(), options.metrics.contentType);
      } else {
        send(
          response,
          404,
          JSON.stringify({ error: "not found", paths: ["/healthz", "/readyz", "/health", "/metrics"] }),
        );
      }
    } catch (error) {
      options.logger.error({ err: error, path: url.pathname }, "health server request failed");
      send(response, 500, JSON.stringify({ status: "unhealthy", timestamp: new Date().toISOString() }));
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
