// An application role holding only steward_client (as `authenticated` would on Supabase), and
// many separate connections as that role, for tests that need real concurrency.
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { TestDatabase } from "./helpers.ts";
import { withAdmin } from "./helpers.ts";

export interface ClientRole {
  name: string;
  url: string;
  /** A pool connected as the role. */
  pool: pg.Pool;
  /** `count` clients connected as the role, each its own backend. */
  connect(count: number): Promise<pg.Client[]>;
  drop(): Promise<void>;
}

export async function createClientRole(db: TestDatabase): Promise<ClientRole> {
  const name = `steward_app_${randomBytes(4).toString("hex")}`;
  const password = randomBytes(12).toString("hex");
  await withAdmin((client) => client.query(`create role ${name} login password '${password}' in role steward_client`));
  const url = new URL(db.url);
  url.username = name;
  url.password = password;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 10 });
  pool.on("error", () => {});
  const opened: pg.Client[] = [];
  return {
    name,
    url: url.toString(),
    pool,
    async connect(count) {
      const clients = Array.from({ length: count }, () => new pg.Client({ connectionString: url.toString() }));
      for (const client of clients) client.on("error", () => {});
      opened.push(...clients);
      await Promise.all(clients.map((client) => client.connect()));
      return clients;
    },
    async drop() {
      await Promise.all(opened.map((client) => client.end().catch(() => {})));
      await pool.end();
      await withAdmin((client) => client.query(`drop role if exists ${name}`));
    },
  };
}

/** The SQLSTATE and message of the error `work` rejects with. */
export async function sqlError(work: Promise<unknown>): Promise<{ code: string; message: string; hint?: string }> {
  try {
    await work;
  } catch (error) {
    const { code, message, hint } = error as { code: string; message: string; hint?: string };
    return { code, message, hint };
  }
  throw new Error("expected the statement to fail");
}
