#!/usr/bin/env zx
// Usage: npx zx scripts/sql-reference.mjs [--check]
//
// Writes docs/sql-reference.md from the `comment on` texts of a scratch database migrated from
// migrations/committed/: a database created (and dropped afterwards) on the server DATABASE_URL
// names, else a throwaway embedded server. Rerun it after changing a migration's comments
// (`npm test` fails while the committed file differs). --check only compares, exit 1 if stale.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { register } from "tsx/esm/api";
import { argv } from "zx";

register();
const pg = (await import("pg")).default;
const { startEmbedded, withDatabase } = await import("../src/embedded.ts");
const { createLogger } = await import("../src/logger.ts");
const { migrate } = await import("../src/migrate.ts");
const { renderSqlReference, SQL_REFERENCE_PATH } = await import("./lib/sql-reference.ts");

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const logger = createLogger(process.env.LOG_LEVEL ?? "warn", { destination: 2 });

let server;
let dir;
let adminUrl = process.env.DATABASE_URL;
if (!adminUrl) {
  dir = await mkdtemp(path.join(os.tmpdir(), "steward-reference-"));
  server = await startEmbedded({ dir, preferredPort: 0, logger, ephemeral: true });
  adminUrl = withDatabase(server.url, "postgres");
}
const scratch = `steward_reference_${process.pid}`;
const admin = new pg.Client({ connectionString: adminUrl });
let text;
try {
  await admin.connect();
  await admin.query(`create database ${scratch}`);
  const url = withDatabase(adminUrl, scratch);
  await migrate(url, logger);
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    text = await renderSqlReference(db);
  } finally {
    await db.end();
  }
} finally {
  await admin.query(`drop database if exists ${scratch} with (force)`).catch(() => undefined);
  await admin.end();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}

const target = path.join(ROOT, SQL_REFERENCE_PATH);
if (argv.check) {
  const committed = await readFile(target, "utf8").catch(() => "");
  if (committed !== text) {
    console.error(`${SQL_REFERENCE_PATH} is stale: run \`npx zx scripts/sql-reference.mjs\` and commit the result`);
    process.exit(1);
  }
  console.log(`${SQL_REFERENCE_PATH} is up to date`);
} else {
  await writeFile(target, text);
  console.log(`wrote ${SQL_REFERENCE_PATH} (${text.split("\n").length} lines)`);
}
