// Shared by the zx scripts in scripts/: the `steward` command, and a pool on the database it
// uses (DATABASE_URL, else the embedded server under STEWARD_DATA_DIR), through the same
// TypeScript sources (run by tsx, as bin/steward.js does).
import path from "node:path";
import { fileURLToPath } from "node:url";
import { register } from "tsx/esm/api";

register();
const { loadConfig } = await import("../../src/config.ts");
const { createLogger } = await import("../../src/logger.ts");
const { createPool, openDatabase } = await import("../../src/database.ts");

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** `node bin/steward.js`, for zx: $`${STEWARD} recalc …`. */
export const STEWARD = [process.execPath, path.join(ROOT, "bin", "steward.js")];

/** Runs `work(pool)` against steward's database, then closes everything it opened. */
export async function withPool(work) {
  const config = loadConfig();
  const logger = createLogger(process.env.LOG_LEVEL ?? "warn", { destination: 2 });
  const database = await openDatabase(config, logger);
  const user = process.env.USER ?? "script";
  const pool = createPool(database.url, { max: 2, applicationName: "steward script", actor: `script:${user}` });
  try {
    return await work(pool);
  } finally {
    await pool.end();
    await database.release();
  }
}
