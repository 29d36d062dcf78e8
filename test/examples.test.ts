// `steward example install|remove <name>` on a database steward migrated: both examples install
// with one command (twice: idempotent), and removal leaves the database as it was: every object
// outside steward's schema and every steward registry row the example made is gone.
import { describe, expect, it } from "vitest";
import { runCli, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

/** What an example could leave behind: objects outside steward's own schemas, and registry rows. */
async function footprint(): Promise<Record<string, unknown>> {
  const { rows } = await context.db.pool.query(`
    select
      (select pg_catalog.array_agg(nspname order by nspname) from pg_catalog.pg_namespace
        where nspname not like 'pg\\_%' and nspname <> 'information_schema') as schemas,
      (select count(*) from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public')::int as public_relations,
      (select count(*) from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public')::int as public_functions,
      (select count(*) from pg_catalog.pg_policy)::int as policies,
      (select pg_catalog.array_agg(c order by c) from pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) as c
        where s.setdatabase = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())) as settings,
      (select count(*) from steward.tracked_tables)::int as tracked,
      (select count(*) from steward.materialized_views)::int as views,
      (select count(*) from steward.recalculations)::int as recalculations,
      (select count(*) from steward.recalc_runs)::int as runs,
      (select count(*) from steward.rate_limit_windows)::int as windows,
      (select count(*) from steward.circuits)::int as circuits,
      (select count(*) from steward.invalidations)::int as invalidations,
      (select count(*) from graphile_worker.jobs)::int as jobs`);
  return rows[0] as Record<string, unknown>;
}

describe("steward example install|remove", () => {
  for (const [name, schema] of [
    ["health-metrics", "health_metrics"],
    ["recall", "recall"],
  ] as const) {
    it(`installs ${name} with one command, again safely, and removes it leaving nothing behind`, async () => {
      const env = { DATABASE_URL: context.db.url };
      const before = await footprint();
      for (let i = 0; i < 2; i++) {
        const installed = await runCli(["example", "install", name], env);
        expect(installed, installed.stderr).toMatchObject({
          code: 0,
          stdout: `installed ${name} (schema ${schema})\n`,
        });
      }
      expect((await footprint()).schemas).toContain(schema);
      const removed = await runCli(["example", "remove", name], env);
      expect(removed, removed.stderr).toMatchObject({
        code: 0,
        stdout: `removed ${name} (schema ${schema} dropped)\n`,
      });
      expect(await footprint()).toEqual(before);
      const again = await runCli(["example", "remove", name], env);
      expect(again).toMatchObject({ code: 0, stdout: `${name} is not installed\n` });
    });
  }

  it("names the examples when given an unknown one, and changes nothing", async () => {
    const before = await footprint();
    const result = await runCli(["example", "install", "nope"], { DATABASE_URL: context.db.url });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/unknown example "nope": one of health-metrics, recall/);
    expect(await footprint()).toEqual(before);
  });
});
