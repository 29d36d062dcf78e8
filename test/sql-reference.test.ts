// docs/sql-reference.md is generated from the database's own `comment on` texts; this regenerates
// it from the migrated test database and fails when the committed file differs, so the reference
// cannot drift from the migrations (whoever changes a comment or adds a function reruns the script).
import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { renderSqlReference, SQL_REFERENCE_PATH } from "../scripts/lib/sql-reference.ts";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

describe("docs/sql-reference.md", () => {
  it("matches what the migrated database says about itself", async () => {
    const generated = await renderSqlReference(context.db.pool);
    const committed = await readFile(path.join(PACKAGE_ROOT, SQL_REFERENCE_PATH), "utf8").catch(() => "");
    expect(
      committed === generated,
      `${SQL_REFERENCE_PATH} is stale: run \`npx zx scripts/sql-reference.mjs\` and commit the result`,
    ).toBe(true);
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
