// Which database a command talks to: DATABASE_URL when set, else the embedded server.
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
 * acts (`steward.actor`, read by the audit log).
 */
export function createPool(url: string, options: { max?: number; applicationName?: string; actor?: string } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    application_name: options.applicationName ?? "pg-steward",
    options: options.actor ? `-c steward.actor=${options.actor.replace(/[^\w.@:-]/g, "_")}` : undefined,
  });
  // A connection's error (server restart, terminated backend) must not crash the process; the
  // pool drops that client and the next query connects afresh.
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}
