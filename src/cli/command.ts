// The shape of a `steward` subcommand and what every subcommand is handed.
import type { ParseArgsConfig } from "node:util";
import type pg from "pg";
import os from "node:os";
import type { Config } from "../config.ts";
import { createPool, openDatabase, type Database } from "../database.ts";
import type { Logger } from "../logger.ts";

export type Options = NonNullable<ParseArgsConfig["options"]>;
export type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

export interface CommandContext {
  config: Config;
  logger: Logger;
  /** Where results go (stdout); logs go to stderr except for the long-running commands. */
  print(line: string): void;
  /** Whether stdout is a terminal (progress bars, colours). */
  isTerminal: boolean;
}

export interface Command {
  name: string;
  /** The synopsis, e.g. `run <task> [json-payload] [--wait]`, and option lines. */
  usage: string;
  options?: Options;
  /** Allowed positional arguments (min, max). */
  positionals?: [number, number];
  run(positionals: string[], values: Values, context: CommandContext): Promise<number>;
}

/** The actor recorded in the audit log for commands run by a person. */
function cliActor(): string {
  return `cli:${os.userInfo().username}`;
}

/** Opens the database (embedded or DATABASE_URL) and a small pool for the length of `work`. */
export async function withDatabasePool<T>(
  context: CommandContext,
  work: (pool: pg.Pool, database: Database) => Promise<T>,
): Promise<T> {
  const database = await openDatabase(context.config, context.logger);
  const pool = createPool(database.url, { max: 4, applicationName: "steward cli", actor: cliActor() });
  try {
    return await work(pool, database);
  } finally {
    await pool.end().catch(() => undefined);
    await database.release();
  }
}
