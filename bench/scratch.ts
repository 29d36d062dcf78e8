// A throwaway database beside the user's, for `steward bench` and `steward load`: they create
// data and policies that have no place in a real database.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { withDatabase } from "../src/embedded.ts";
import { sqlstate } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { migrate } from "../src/migrate.ts";

/** A scratch database next to `url`, migrated; dropped by the returned function. */
export async function scratchDatabase(
  url: string,
  logger: Logger,
  purpose: "bench" | "load",
): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `steward_${purpose}_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } catch (error) {
    throw Object.assign(
      new Error(
        `steward ${purpose} creates a scratch database and could not (${(error as Error).message}); ` +
          `use a role with CREATEDB (the embedded server's default role has it)`,
      ),
      { code: sqlstate(error) },
    );
  } finally {
    await admin.end();
  }
  const scratchUrl = withDatabase(url, name);
  await migrate(scratchUrl, logger);
  return {
    url: scratchUrl,
    async drop() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}
