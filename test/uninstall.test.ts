import { runOnce } from "graphile-worker";
import { describe, expect, it } from "vitest";
import { graphileLogger } from "../src/logger.ts";
import { migrate } from "../src/migrate.ts";
import { TASKS } from "../tasks/index.ts";
import { createTestRole, runCli, testLogger, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

/** What the team owns, which an uninstall must leave exactly as it was. */
async function teamState() {
  const { rows } = await context.db.pool.query(`
    select (select json_agg(o order by o.id) from public.orders o) as orders,
           (select json_agg(t order by t.customer) from public.order_totals t) as totals,
           (select json_agg(j.task_identifier order by j.id) from graphile_worker.jobs j
             where j.task_identifier = 'team_report') as team_jobs`);
  return rows[0];
}

/** Whatever of pg-steward could be left in the database. */
async function stewardLeftovers() {
  const { rows } = await context.db.pool.query(`
    select (select array_agg(nspname::text order by nspname) from pg_namespace
             where nspname in ('steward', 'graphile_migrate')) as schemas,
           (select array_agg(tgname::text order by tgname) from pg_trigger
             where tgname like 'steward%' or tgname like '\\_steward%') as triggers,
           (select array_agg(distinct j.task_identifier) from graphile_worker.jobs j
             where j.task_identifier <> 'team_report') as steward_jobs,
           (select array_agg(k.identifier) from graphile_worker._private_known_crontabs k
             where k.identifier like 'steward:%') as crontabs`);
  return rows[0];
}

describe("steward.uninstall_plan", () => {
  it("counts the jobs of every built-in task as pg-steward's by default, as steward uninstall does", async () => {
    const client = await context.db.pool.connect();
    try {
      await client.query("begin");
      for (const task of TASKS) await client.query("select graphile_worker.add_job($1, '{}')", [task.identifier]);
      const jobsStep = async (sql: string, values: unknown[] = []) =>
        (
          await client.query(
            `select object from (${sql}) p where object like '%queued job(s) of pg-steward''s tasks%'`,
            values,
          )
        ).rows[0]?.object;
      const byDefault = await jobsStep("select * from steward.uninstall_plan()");
      expect(byDefault).toBe(
        await jobsStep("select * from steward.uninstall_plan($1::text[])", [TASKS.map((task) => task.identifier)]),
      );
      expect(byDefault).toMatch(new RegExp(`^${TASKS.length} queued job`));
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});

describe("steward uninstall", () => {
  it("removes everything of pg-steward and nothing of the team's, refusing while a worker lives or a view depends on it", async () => {
    const { pool } = context.db;
    const env = { DATABASE_URL: context.db.url };
    const role = await createTestRole(context.db, "uninstall_app");
    await pool.query(`
      grant steward_client to ${role.name};
      create table public.orders (id int primary key, customer text not null, amount int not null);
      insert into public.orders select g, 'c' || (g % 3), g from generate_series(1, 30) g;
      select steward.track_table('public.orders', array['orders', 'customer:{customer}']);
      create materialized view public.order_totals as
        select customer, sum(amount) as total from public.orders group by customer;
      create unique index on public.order_totals (customer);
      select steward.register_materialized_view('public.order_totals');
      update public.orders set amount = amount + 1 where id = 1;
      insert into steward.dead_letters (source, task_identifier, payload, attempts, max_attempts, last_error)
        values ('job', 'team_report', '{"month": 11}', 3, 3, 'the printer is on fire');
      select graphile_worker.add_job('team_report', '{"month": 12}');
      select graphile_worker.add_job('cleanup', '{}');
      insert into graphile_worker._private_known_crontabs (identifier, known_since) values ('steward:cleanup', now());`);
    expect((await pool.query("select count(*)::int as n from steward.invalidations")).rows[0].n).toBeGreaterThan(0);
    const before = await teamState();
    const stewardBefore = await stewardLeftovers();

    // Without --yes: the plan, nothing removed, exit 3.
    const preview = await runCli(["uninstall"], env);
    expect(preview.code, preview.stderr).toBe(3);
    expect(preview.stdout).toContain("Removes, in one transaction:");
    expect(preview.stdout).toContain("the dead-letter trigger _steward_dead_letters on graphile_worker._private_jobs");
    expect(preview.stdout).toContain("the tracking triggers on public.orders");
    expect(preview.stdout).toContain("1 queued job(s) of pg-steward's tasks (cleanup)");
    expect(preview.stdout).toMatch(/schema steward: .* 1 dead letter\(s\) not replayed/);
    expect(preview.stdout).toContain(`role steward_client (granted to ${role.name})`);
    expect(preview.stdout).toMatch(
      /Keeps:\n {2}- schema graphile_worker, usable by plain graphile-worker, with 1 queued job/,
    );
    expect(preview.stdout).toContain("nothing removed: back up first (pg_dump");
    expect(await stewardLeftovers()).toEqual(stewardBefore);

    // A live worker and a view of the team's over a steward table: refused, exit 1.
    await pool.query(`
      insert into steward.workers (pool_id, host, pid) values ('live-pool', 'app-1', 4242);
      create view public.slow_endpoints as select endpoint from steward.request_stats_5m where p95_ms > 2000;`);
    const refused = await runCli(["uninstall", "--yes"], env);
    expect(refused.code, refused.stderr).toBe(1);
    expect(refused.stdout).toContain("worker app-1:4242 is alive");
    expect(refused.stdout).toContain("view public.slow_endpoints depends on table steward.request_stats_5m");
    expect(refused.stdout).toMatch(/nothing removed\n$/);
    expect(await stewardLeftovers()).toEqual(stewardBefore);
    await pool.query("delete from steward.workers; drop view public.slow_endpoints");

    const removed = await runCli(["uninstall", "--yes"], env);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toContain("removed pg-steward from database");
    // Every test database of this server uses the role, so it stays, and the output says why.
    expect(removed.stdout).toMatch(/kept role steward_client: role "steward_client" cannot be dropped/);

    expect(await stewardLeftovers()).toEqual({ schemas: null, triggers: null, steward_jobs: null, crontabs: null });
    expect(await teamState()).toEqual(before);
    // The team's tables take writes (no trigger left to call a missing function), its view refreshes.
    await pool.query("update public.orders set amount = 0 where id = 2; refresh materialized view public.order_totals");
    // graphile-worker is usable as it is: a plain worker runs the team's job.
    const ran: unknown[] = [];
    await runOnce({
      connectionString: context.db.url,
      logger: graphileLogger(testLogger()),
      taskList: { team_report: async (payload) => void ran.push(payload) },
    });
    expect(ran).toEqual([{ month: 12 }]);

    // Nothing installed: exit 0 and say so. And pg-steward installs again from scratch.
    const again = await runCli(["uninstall", "--yes"], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("is not installed");
    await migrate(context.db.url, testLogger());
    const { rows } = await pool.query("select name, detail from steward.verify_installation() where status = 'fail'");
    expect(rows).toEqual([]);
    await role.drop();
  }, 240_000);
});
