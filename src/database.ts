// Which database a command talks to (DATABASE_URL when set, else the embedded server), and the
// idioms every module uses to talk to it: a transaction, session settings, cancelling on abort.
import pg from "pg";
import type { Config } from "./config.ts";
import { startEmbedded, type EmbeddedServer } from "./embedded.ts";
import type { Logger } from "./logger.ts";

export interface Database {
  url: string;
  /** Set when the embedded server is in use. */
  embedded?: EmbeddedServer;
  /** Stops the embedded server if this process started it. */
  release(): Promise<void>;
}

/**
 * `ownProcessGroup`: the caller shuts down gracefully on Ctrl-C and stops the embedded server
 * itself, so the server must not receive the Ctrl-C a terminal sends to its foreground group.
 */
export async function openDatabase(
  config: Config,
  logger: Logger,
  options: { ownProcessGroup?: boolean } = {},
): Promise<Database> {
  if (config.databaseUrl) {
    return { url: config.databaseUrl, release: async () => {} };
  }
  const embedded = await startEmbedded({
    dir: config.dataDir,
    preferredPort: config.embeddedPort,
    logger,
    ownProcessGroup: options.ownProcessGroup,
  });
  return {
    url: embedded.url,
    embedded,
    release: () => (embedded.owned ? embedded.stop() : Promise.resolve()),
  };
}

/**
 * A pool whose connections say who they are (application_name) and which person or program
 * says it acts (`steward.actor`: the audit log keeps it as claimed_actor, beside the session user).
 */
export function createPool(
  url: string,
  options: {
    max?: number;
    applicationName?: string;
    actor?: string;
    /** statement_timeout of every connection (ms); the server's default when absent. */
    statementTimeoutMs?: number;
    /** How long to wait for a connection (ms) before the query fails; forever when absent. */
    connectionTimeoutMs?: number;
  } = {},
): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    application_name: options.applicationName ?? "pg-steward",
    options: options.actor ? `-c steward.actor=${options.actor.replace(/[^\w.@:-]/g, "_")}` : undefined,
    statement_timeout: options.statementTimeoutMs,
    connectionTimeoutMillis: options.connectionTimeoutMs,
  });
  // A connection's error (server restart, terminated backend) must not crash the process; the
  // pool drops that client and the next query connects afresh.
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

/** A pool, a pooled client or a client: anything that runs one statement. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

/**
 * Runs `work` in a transaction on one client of `pool`: commits when it resolves, rolls back when
 * it throws. A client whose rollback failed is dropped rather than handed to the next caller.
 */
export async function withTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let unusable: Error | undefined;
  try {
    await client.query("begin");
    const result = await work(client);
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback").catch((rollbackError: Error) => (unusable = rollbackError));
    throw error;
  } finally {
    client.release(unusable);
  }
}

/** Interval settings in milliseconds, in the order asked. */
export async function intervalSettingsMs(db: Queryable, names: string[]): Promise<number[]> {
  const { rows } = await db.query<{ ms: number }>(
    `select (extract(epoch from steward.setting_interval(s.name)) * 1000)::float8 as ms
       from unnest($1::text[]) with ordinality as s(name, ordinal) order by s.ordinal`,
    [names],
  );
  return rows.map((row) => row.ms);
}

type SessionSetting = "lock_timeout" | "statement_timeout";

/** Runs `work` on one client with session settings, reset (or the client dropped) afterwards. */
export async function withSessionSettings<T>(
  pool: pg.Pool,
  settings: Partial<Record<SessionSetting, string>>,
  work: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let unusable: Error | undefined;
  try {
    for (const [name, value] of Object.entries(settings)) {
      await client.query("select pg_catalog.set_config($1, $2, false)", [name, value]);
    }
    return await work(client);
  } finally {
    for (const name of Object.keys(settings)) {
      await client.query(`reset ${name}`).catch((error: Error) => (unusable = error));
    }
    client.release(unusable);
  }
}

/**
 * Cancels the statement `client` is running when `signal` aborts (the worker is stopping), so a
 * long REFRESH or VACUUM does not hold the shutdown. Returns the function that stops listening.
 */
export function cancelOnAbort(pool: pg.Pool, client: pg.PoolClient, signal: AbortSignal | undefined): () => void {
  const pid = (client as pg.PoolClient & { processID?: number }).processID;
  if (!signal || pid === undefined) return () => {};
  const cancel = () => void pool.query("select pg_catalog.pg_cancel_backend($1)", [pid]).catch(() => undefined);
  if (signal.aborted) cancel();
  else signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}
