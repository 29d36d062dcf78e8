import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { withDatabase } from "../src/embedded.ts";
import { MIGRATIONS_FOLDER, migrate } from "../src/migrate.ts";
import { adminUrl, runCli, testLogger, useTestDatabase, withAdmin } from "./helpers.ts";

const context = useTestDatabase();

interface Check {
  name: string;
  status: string;
  detail: string;
}

async function checks(): Promise<Check[]> {
  const { rows } = await context.db.pool.query<Check>("select name, status, detail from steward.verify_installation()");
  return rows;
}

async function checkNamed(name: string): Promise<Check> {
  const found = (await checks()).find((row) => row.name === name);
  if (!found) throw new Error(`no check named ${name}`);
  return found;
}

describe("verify_installation on a fresh install", () => {
  it("passes every check, warning only about what is optional or not running", async () => {
    const rows = await checks();
    expect(rows.filter((row) => row.status === "fail")).toEqual([]);
    const warnings = rows.filter((row) => row.status === "warn").map((row) => row.name);
    expect(warnings.every((name) => ["workers", "pg_stat_statements"].includes(name))).toBe(true);
    expect(rows.map((row) => row.name)).toEqual(
      expect.arrayContaining([
        "schema version",
        "public API",
        "graphile-worker schema",
        "dead-letter trigger",
        "security definer search_path",
        "steward_client role",
        "table privileges",
        "function privileges",
        "cleanup steps",
        "metric sources",
        "recalculations",
        "workers",
        "pg_stat_statements",
      ]),
    );
  });

  it("steward verify prints the checks and exits 0 with warnings only", async () => {
    const result = await runCli(["verify"], { DATABASE_URL: context.db.url });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/✓ dead-letter trigger/);
    expect(result.stdout).toMatch(/0 failed/);
    const json = await runCli(["verify", "--json"], { DATABASE_URL: context.db.url });
    expect(JSON.parse(json.stdout)).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: "public API", status: "ok" })]),
    );
  });
});

describe("verify_installation catches a broken deploy", () => {
  it("fails when the dead-letter trigger is gone, and steward migrate puts it back", async () => {
    const { pool } = context.db;
    await pool.query("drop trigger _steward_dead_letters on graphile_worker._private_jobs");
    expect(await checkNamed("dead-letter trigger")).toMatchObject({
      status: "fail",
      detail: expect.stringContaining("steward migrate"),
    });
    const result = await runCli(["verify"], { DATABASE_URL: context.db.url });
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/✗ dead-letter trigger/);
    await migrate(context.db.url, testLogger());
    expect(await checkNamed("dead-letter trigger")).toMatchObject({ status: "ok" });
  });

  it("fails when a registered view lost its unique index, naming the index to create", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.sales (id int primary key, region text not null, amount int);
      create materialized view public.sales_by_region as select region, sum(amount) as total from public.sales group by region;
      create unique index sales_by_region_key on public.sales_by_region (region);
      select steward.register_materialized_view('public.sales_by_region');`);
    expect(await checkNamed("materialized view public.sales_by_region")).toMatchObject({ status: "ok" });
    await pool.query("drop index public.sales_by_region_key");
    expect(await checkNamed("materialized view public.sales_by_region")).toMatchObject({
      status: "fail",
      detail: expect.stringContaining("create unique index on public.sales_by_region"),
    });
    await pool.query("select steward.unregister_materialized_view('public.sales_by_region')");
  });

  it("fails when a tracked table lost a trigger, naming the call that restores it", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.articles (id int primary key, body text);
      select steward.track_table('public.articles', array['article:{id}']);`);
    expect(await checkNamed("tracked table public.articles")).toMatchObject({ status: "ok" });
    await pool.query("drop trigger steward_invalidate_update on public.articles");
    expect(await checkNamed("tracked table public.articles")).toMatchObject({
      status: "fail",
      detail: expect.stringContaining(`select steward.track_table('public.articles', '{"article:{id}"}')`),
    });
    await pool.query("select steward.untrack_table('public.articles')");
  });

  it("fails on a SECURITY DEFINER function without a pinned search_path", async () => {
    const { pool } = context.db;
    await pool.query("create function steward.careless() returns int language sql security definer as 'select 1'");
    try {
      expect(await checkNamed("security definer search_path")).toMatchObject({
        status: "fail",
        detail: expect.stringContaining("steward.careless()"),
      });
    } finally {
      await pool.query("drop function steward.careless()");
    }
  });

  it("fails on a metric source whose function is gone, and warns about one that raises", async () => {
    const { pool } = context.db;
    await pool.query(`
      create function public.doomed_metrics() returns table (metric text, kind text, help text, labels jsonb, value double precision)
        language plpgsql as $$ begin raise exception 'no table here'; end $$;
      insert into steward.metric_sources (name, function, description) values ('doomed', 'public.doomed_metrics()', 'test');`);
    try {
      expect(await checkNamed("metric sources")).toMatchObject({
        status: "warn",
        detail: expect.stringContaining("doomed"),
      });
      await pool.query("drop function public.doomed_metrics()");
      expect(await checkNamed("metric sources")).toMatchObject({
        status: "fail",
        detail: expect.stringContaining("delete from steward.metric_sources where name = <source>"),
      });
    } finally {
      await pool.query("delete from steward.metric_sources where name = 'doomed'");
      await pool.query("drop function if exists public.doomed_metrics()");
    }
    expect(await checkNamed("metric sources")).toMatchObject({ status: "ok" });
  });

  it("fails when steward_client or PUBLIC can read a steward table", async () => {
    const { pool } = context.db;
    await pool.query("grant select on steward.settings to steward_client");
    await pool.query("grant select on steward.audit_log to public");
    try {
      expect(await checkNamed("table privileges")).toMatchObject({
        status: "fail",
        detail: expect.stringMatching(/steward\.audit_log \(public\).*steward\.settings \(steward_client\)/),
      });
    } finally {
      await pool.query(
        "revoke select on steward.settings from steward_client; revoke select on steward.audit_log from public",
      );
    }
    expect(await checkNamed("table privileges")).toMatchObject({ status: "ok" });
  });

  it("fails when a steward function is executable by PUBLIC, or steward_client reaches beyond the client API", async () => {
    const { pool } = context.db;
    await pool.query("grant execute on function steward.purge_dead_letters(interval) to public");
    await pool.query("grant execute on function steward.set_setting(text, text) to steward_client");
    await pool.query("revoke execute on function steward.enqueue_invalidation(text, interval) from steward_client");
    try {
      const check = await checkNamed("function privileges");
      expect(check.status).toBe("fail");
      expect(check.detail).toContain("steward.purge_dead_letters(interval) (public)");
      expect(check.detail).toContain("steward.set_setting(text,text) (steward_client)");
      expect(check.detail).toContain("cannot execute: steward.enqueue_invalidation(text,interval)");
    } finally {
      await pool.query(`
        revoke execute on function steward.purge_dead_letters(interval) from public;
        revoke execute on function steward.set_setting(text, text) from steward_client;
        grant execute on function steward.enqueue_invalidation(text, interval) to steward_client;`);
    }
    expect(await checkNamed("function privileges")).toMatchObject({ status: "ok" });
  });

  it("fails when a cleanup step's function is gone", async () => {
    const { pool } = context.db;
    await pool.query(`
      create function public.cleanup_gone(batch_size integer) returns bigint language sql as 'select 0::bigint';
      insert into steward.cleanup_steps values ('gone', 'public.cleanup_gone(integer)', 'test');
      drop function public.cleanup_gone(integer);`);
    try {
      expect(await checkNamed("cleanup steps")).toMatchObject({
        status: "fail",
        detail: expect.stringContaining("gone"),
      });
    } finally {
      await pool.query("delete from steward.cleanup_steps where name = 'gone'");
    }
  });

  it("fails when the table of a plain cleanup step is gone", async () => {
    const { pool } = context.db;
    await pool.query(`
      create table public.expiring_rows (at timestamptz not null);
      insert into steward.cleanup_steps (name, target, time_column, retention_setting, description)
      values ('vanished', 'public.expiring_rows', 'at', 'maintenance.log_retention', 'test');`);
    try {
      expect(await checkNamed("cleanup steps")).toMatchObject({ status: "ok" });
      await pool.query("drop table public.expiring_rows");
      expect(await checkNamed("cleanup steps")).toMatchObject({
        status: "fail",
        detail: expect.stringContaining("vanished"),
      });
    } finally {
      await pool.query(
        "delete from steward.cleanup_steps where name = 'vanished'; drop table if exists public.expiring_rows",
      );
    }
  });
});

describe("steward migrate", () => {
  it("upgrades a database where an earlier version is installed, keeping its data", async () => {
    const folder = await fs.mkdtemp(path.join(os.tmpdir(), "steward-migrations-"));
    await fs.mkdir(path.join(folder, "committed"));
    const files = (await fs.readdir(path.join(MIGRATIONS_FOLDER, "committed"))).sort();
    // The earlier version: every migration up to and including rate limits.
    const earlier = files.slice(0, files.findIndex((file) => file.endsWith("-rate-limits.sql")) + 1);
    for (const file of earlier) {
      await fs.copyFile(path.join(MIGRATIONS_FOLDER, "committed", file), path.join(folder, "committed", file));
    }
    const name = `steward_upgrade_${Date.now()}`;
    await withAdmin((client) => client.query(`create database ${name}`));
    const url = withDatabase(adminUrl(), name);
    try {
      await migrate(url, testLogger(), { migrationsFolder: folder });
      const { default: pg } = await import("pg");
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        expect((await client.query("select count(*)::int as n from graphile_migrate.migrations")).rows[0].n).toBe(
          earlier.length,
        );
        await client.query("select steward.set_rate_limit('api', 10, '1 minute')");
        await migrate(url, testLogger());
        const { rows } = await client.query("select count(*)::int as n from graphile_migrate.migrations");
        expect(rows[0].n).toBe(files.length);
        expect((await client.query("select allowed from steward.rate_limit_hit('api', 'k')")).rows[0].allowed).toBe(
          true,
        );
        const { rows: failed } = await client.query(
          `select name from steward.verify_installation() where status = 'fail'`,
        );
        expect(failed).toEqual([]);
      } finally {
        await client.end();
      }
    } finally {
      await withAdmin((client) => client.query(`drop database if exists ${name} with (force)`));
      await fs.rm(folder, { recursive: true, force: true });
    }
  });
});

describe("status", () => {
  it("reports queues, dead letters, pending invalidations and views in one document", async () => {
    const { pool } = context.db;
    await pool.query("select graphile_worker.add_job('status_probe', '{}'::json)");
    await pool.query("select steward.enqueue_invalidation('status:probe')");
    const { rows } = await pool.query("select steward.status() as status");
    const status = rows[0].status;
    expect(status.queues).toEqual(
      expect.arrayContaining([expect.objectContaining({ task: "status_probe", ready: 1 })]),
    );
    expect(status.invalidations.pending).toBeGreaterThanOrEqual(1);
    expect(Object.keys(status)).toEqual(
      expect.arrayContaining([
        "queues",
        "running",
        "workers",
        "dead_letters",
        "invalidations",
        "views",
        "circuits",
        "last_vacuum",
        "recalculations",
      ]),
    );
    const cli = await runCli(["status"], { DATABASE_URL: context.db.url });
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/status_probe/);
    expect(cli.stdout).toMatch(/Invalidations: \d+ pending/);
    const json = await runCli(["status", "--json"], { DATABASE_URL: context.db.url });
    expect(JSON.parse(json.stdout).queues).toBeInstanceOf(Array);
  });
});
