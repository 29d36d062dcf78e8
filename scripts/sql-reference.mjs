#!/usr/bin/env zx
// Usage: npx zx scripts/sql-reference.mjs [--check]
//
// Writes docs/sql-reference.md from the `comment on` texts of a scratch database migrated from
// migrations/committed/, and the settings table of docs/configuration.md from its steward.settings
// rows: a database created (and dropped afterwards) on the server DATABASE_URL names, else a
// throwaway embedded server. Rerun it after changing a migration's comments, functions or settings
// (`npm test` fails while a committed file differs). --check only compares, exit 1 if stale.
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
const { CONFIGURATION_PATH, renderSettingsTable, renderSqlReference, SQL_REFERENCE_PATH, withSettingsTable } =
  await import("./lib/sql-reference.ts");

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
const files = new Map();
try {
  await admin.connect();
  await admin.query(`create database ${scratch}`);
  const url = withDatabase(adminUrl, scratch);
  await migrate(url, logger);
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    files.set(SQL_REFERENCE_PATH, await renderSqlReference(db));
    const configuration = await readFile(path.join(ROOT, CONFIGURATION_PATH), "utf8");
    files.set(CONFIGURATION_PATH, withSettingsTable(configuration, await renderSettingsTable(db)));
  } finally {
    await db.end();
  }
} finally {
  await admin.query(`drop database if exists ${scratch} with (force)`).catch(() => undefined);
  await admin.end();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}

let stale = 0;
for (const [file, text] of files) {
  const target = path.join(ROOT, file);
  const committed = await readFile(target, "utf8").catch(() => "");
  if (committed === text) {
    console.log(`${file} is up to date`);
  } else if (argv.check) {
    console.error(`${file} is stale: run \`npx zx scripts/sql-reference.mjs\` and commit the result`);
    stale++;
  } else {
    await writeFile(target, text);
    console.log(`wrote ${file}`);
  }
}
process.exit(stale ? 1 : 0);
