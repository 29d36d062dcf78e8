// docs/sql-reference.md and the settings table of docs/configuration.md are generated from the
// database itself; this regenerates both from the migrated test database and fails when a committed
// file differs, so they cannot drift from the migrations (whoever changes a comment, adds a
// function or a setting reruns the script).
import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import {
  CONFIGURATION_PATH,
  renderSettingsTable,
  renderSqlReference,
  SQL_REFERENCE_PATH,
  withSettingsTable,
} from "../scripts/lib/sql-reference.ts";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
const STALE = "is stale: run `npx zx scripts/sql-reference.mjs` and commit the result";
const committed = (file: string) => readFile(path.join(PACKAGE_ROOT, file), "utf8");

describe("generated docs", () => {
  it("docs/sql-reference.md matches what the migrated database says about itself", async () => {
    const generated = await renderSqlReference(context.db.pool);
    expect((await committed(SQL_REFERENCE_PATH)) === generated, `${SQL_REFERENCE_PATH} ${STALE}`).toBe(true);
  });

  it("docs/configuration.md lists every steward.settings row with its default and range", async () => {
    const page = await committed(CONFIGURATION_PATH);
    const generated = withSettingsTable(page, await renderSettingsTable(context.db.pool));
    expect(page === generated, `${CONFIGURATION_PATH} ${STALE}`).toBe(true);
  });

  it("documents every steward function, table and view with a comment", async () => {
    const { rows } = await context.db.pool.query<{ object: string }>(`
      select p.oid::regprocedure::text as object from pg_catalog.pg_proc p
       where p.pronamespace = 'steward'::regnamespace and pg_catalog.obj_description(p.oid, 'pg_proc') is null
      union all
      select c.oid::regclass::text from pg_catalog.pg_class c
       where c.relnamespace = 'steward'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
         and pg_catalog.obj_description(c.oid, 'pg_class') is null`);
    expect(rows.map((row) => row.object)).toEqual([]);
  });
});
