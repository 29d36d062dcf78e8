// Installing and removing the Recall example: schema.sql is idempotent (install runs it whole,
// in one transaction); removal is recall.remove(), which undoes what install registered with
// steward and drops schema recall.
import fs from "node:fs/promises";
import path from "node:path";
import type pg from "pg";
import { PACKAGE_ROOT } from "../../src/package-root.ts";

// From the package root, not this module: compiled, this module runs from dist/.
const SCHEMA_FILE = path.join(PACKAGE_ROOT, "examples", "recall", "schema.sql");

/** Installs (or updates) schema recall and its registrations: tracked tables, rate limits, circuits. */
export async function installRecall(pool: pg.Pool): Promise<void> {
  const sql = await fs.readFile(SCHEMA_FILE, "utf8");
  await pool.query(sql);
}

/** Removes the example and what it registered; does nothing when it is not installed. */
export async function removeRecall(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query<{ present: boolean }>(
    "select pg_catalog.to_regprocedure('recall.remove()') is not null as present",
  );
  if (!rows[0]!.present) return false;
  await pool.query("select recall.remove()");
  return true;
}
