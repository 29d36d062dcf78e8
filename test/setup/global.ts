// Starts the PostgreSQL the tests use (embedded, in a temp folder, unless TEST_DATABASE_URL
// names one), migrates a template database once, and hands its name to the test files, which
// each copy it (test/helpers.ts).
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { startEmbedded, withDatabase, type EmbeddedServer } from "../../src/embedded.ts";
import { createLogger } from "../../src/logger.ts";
import { migrate, PACKAGE_ROOT } from "../../src/migrate.ts";

declare module "vitest" {
  export interface ProvidedContext {
    adminUrl: string;
    templateDatabase: string;
    serverVersion: number;
    embedded: boolean;
  }
}

export default async function setup(project: TestProject) {
  // Tests that run `steward` as a child process run bin/steward.js, which runs dist/: build it
  // from the sources under test (incremental: a second run with nothing changed takes ~2 s).
  execFileSync(
    process.execPath,
    [path.join(PACKAGE_ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: PACKAGE_ROOT,
      stdio: "inherit",
    },
  );
  const logger = createLogger(process.env.TEST_LOG_LEVEL ?? "warn", { destination: 2 });
  let server: EmbeddedServer | undefined;
  let dir: string | undefined;
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "steward-test-"));
    await fs.chmod(dir, 0o755);
    server = await startEmbedded({
      dir,
      preferredPort: 0,
      logger,
      ephemeral: true,
      // Durability is not under test; speed is welcome.
      settings: { fsync: "off", synchronous_commit: "off", full_page_writes: "off", max_connections: "400" },
    });
    adminUrl = withDatabase(server.url, "postgres");
  }
  const templateDatabase = `steward_template_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  let rows: Array<{ version: number }>;
  try {
    await admin.connect();
    ({ rows } = await admin.query<{ version: number }>("select current_setting('server_version_num')::int as version"));
    await admin.query(`drop database if exists ${templateDatabase}`);
    await admin.query(`create database ${templateDatabase}`);
    await migrate(withDatabase(adminUrl, templateDatabase), logger);
  } catch (error) {
    // A failed migration must not leave the server running: vitest would wait for it forever.
    await admin.end().catch(() => undefined);
    await server?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
    throw error;
  }

  project.provide("adminUrl", adminUrl);
  project.provide("templateDatabase", templateDatabase);
  project.provide("serverVersion", rows[0]!.version);
  project.provide("embedded", Boolean(server));

  return async () => {
    const { rows: leftovers } = await admin.query<{ datname: string }>(
      "select datname from pg_database where datname like $1 or datname = $2",
      [`steward_test_${process.pid}_%`, templateDatabase],
    );
    for (const { datname } of leftovers) {
      await admin.query(`drop database if exists ${datname} with (force)`).catch(() => undefined);
    }
    await admin.end();
    await server?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  };
}
