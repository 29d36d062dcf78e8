import { describe, expect, it } from "vitest";
import { PermanentError } from "../src/errors.ts";
import { vacuumTables } from "../src/worker/vacuum.ts";
import { effectiveSchedules, schedulesOf } from "../src/worker/schedules.ts";
import { TASKS } from "../tasks/index.ts";
import { vacuumTablesTask } from "../tasks/vacuum_tables.ts";
import {
  eventually,
  maintenanceLog,
  runCli,
  serverVersion,
  testLogger,
  useTestDatabase,
  useTestWorker,
  whileLocked,
  withSettings,
} from "./helpers.ts";

const context = useTestDatabase();
const { runJob, start: startWorker } = useTestWorker(context);
const query = (text: string, values?: unknown[]) => context.db.pool.query(text, values);

/** A table (autovacuum off, so only we vacuum it) with `live` rows left after deleting `dead`. */
async function tableWithDeadTuples(name: string, live: number, dead: number) {
  await query(`create table ${name} (id int primary key, pad text) with (autovacuum_enabled = false)`);
  const client = await context.db.pool.connect();
  try {
    await client.query(`insert into ${name} select g, 'x' from generate_series(1, ${live + dead}) g`);
    if (dead > 0) await client.query(`delete from ${name} where id <= ${dead}`);
    // From PostgreSQL 15 a backend sends its counts when idle, up to 10 s later, unless asked.
    if (serverVersion() >= 150000) await client.query("select pg_stat_force_next_flush()");
  } finally {
    client.release();
  }
  await eventually(
    async () =>
      (
        await query(
          "select n_dead_tup >= $2 and n_live_tup >= $3 as counted from pg_stat_all_tables where relid = $1::regclass",
          [name, dead, live],
        )
      ).rows[0]?.counted,
    { timeoutMs: 30_000, what: `the statistics of ${name}` },
  );
}

describe("vacuum_tables", () => {
  it("picks tables past the dead-tuple thresholds, queue tables first, and vacuums them", async () => {
    await tableWithDeadTuples("public.dead_rows", 5_000, 15_000);
    await tableWithDeadTuples("public.clean_rows", 20_000, 0);
    // 11,000 dead in 131,000 rows is under the 10 % ratio: a queue table needs the count only.
    await tableWithDeadTuples("steward.test_queue", 120_000, 11_000);
    await tableWithDeadTuples("public.few_dead", 120_000, 11_000);

    const { rows: plan } = await query(
      "select target, is_queue_table, reason from steward.vacuum_plan() where target ~ 'dead|clean|queue'",
    );
    expect(plan).toEqual([
      { target: "steward.test_queue", is_queue_table: true, reason: "dead tuples" },
      { target: "public.dead_rows", is_queue_table: false, reason: "dead tuples" },
    ]);

    expect(await runJob("vacuum_tables")).toEqual({ state: "completed" });
    expect(await maintenanceLog(context.db, "vacuum", "public.dead_rows")).toEqual([
      {
        status: "ok",
        detail: expect.objectContaining({
          reason: "dead tuples",
          dead_tuples: 15_000,
          statement: expect.stringMatching(/^VACUUM \(ANALYZE, SKIP_LOCKED.*\) public\.dead_rows$/),
        }),
      },
    ]);
    expect(await maintenanceLog(context.db, "vacuum", "steward.test_queue")).toEqual([
      { status: "ok", detail: expect.anything() },
    ]);
    expect(await maintenanceLog(context.db, "vacuum", "public.clean_rows")).toEqual([]);
    expect(await maintenanceLog(context.db, "vacuum", "public.few_dead")).toEqual([]);
    const { rows } = await query(`
      select (select min(id) from steward.maintenance_log where what = 'steward.test_queue')
           < (select min(id) from steward.maintenance_log where what = 'public.dead_rows') as queue_first`);
    expect(rows[0].queue_first).toBe(true);
    await eventually(
      async () =>
        (
          await query(
            "select vacuum_count > 0 and analyze_count > 0 as done from pg_stat_user_tables where relname = 'dead_rows'",
          )
        ).rows[0].done,
      { timeoutMs: 30_000, what: "the VACUUM to show in the statistics" },
    );
  });

  it("skips a table another session holds locked instead of waiting for it, and vacuums the rest", async () => {
    await query("create table locked_rows (id int)");
    await query("create table free_rows (id int)");
    // With a 10-minute lock_timeout, a VACUUM that waited would outlast the job's deadline.
    const outcome = await whileLocked(context.db, "lock table locked_rows in access exclusive mode", () =>
      withSettings(context.db.pool, { "maintenance.lock_timeout": "10 minutes" }, () =>
        runJob("vacuum_tables", { tables: ["public.locked_rows", "free_rows"] }),
      ),
    );
    expect(outcome).toEqual({ state: "completed" });
    expect(await maintenanceLog(context.db, "vacuum", "public.locked_rows")).toEqual([
      {
        status: "skipped",
        detail: expect.objectContaining({
          reason: "requested",
          warning: expect.stringContaining("lock not available"),
        }),
      },
    ]);
    expect(await maintenanceLog(context.db, "vacuum", "public.free_rows")).toEqual([
      { status: "ok", detail: expect.anything() },
    ]);
  });

  it("stops starting tables when the time budget is spent", async () => {
    await query("create table budget_a (id int)");
    await query("create table budget_b (id int)");
    const summary = await withSettings(context.db.pool, { "maintenance.vacuum_time_budget": "0 seconds" }, () =>
      vacuumTables(context.db.pool, ["budget_a", "budget_b"], { logger: testLogger() }),
    );
    expect(summary).toMatchObject({ planned: 2, vacuumed: [], deferred: ["public.budget_a", "public.budget_b"] });
  });

  it("refuses unknown tables, views and bad payloads as permanent errors, vacuuming nothing", async () => {
    await query("create table real_table (id int)");
    await query("create view a_view as select 1 as id");
    const before = (await query("select count(*)::int as n from steward.maintenance_log")).rows[0].n;
    for (const [tables, message] of [
      [["real_table", "public.no_such_table"], 'relation "public.no_such_table" does not exist'],
      [["a_view"], "public.a_view is not a table (it is a view)"],
    ] as const) {
      const error = await vacuumTables(context.db.pool, [...tables], { logger: testLogger() }).catch(
        (caught) => caught,
      );
      expect(error).toBeInstanceOf(PermanentError);
      expect(error.message).toContain(`vacuum_tables: ${message}`);
    }
    expect(() => vacuumTablesTask.parse({ tables: "real_table" })).toThrow(PermanentError);
    expect(() => vacuumTablesTask.parse({ tables: [""] })).toThrow('"tables" must be an array of non-empty strings');
    expect(await runJob("vacuum_tables", { tables: ["public.no_such_table"] })).toMatchObject({
      state: "failed",
      error: expect.stringContaining('relation "public.no_such_table" does not exist'),
    });
    expect((await query("select count(*)::int as n from steward.maintenance_log")).rows[0].n).toBe(before);
  });

  it("refuses a table the role may not vacuum", async () => {
    const role = `steward_test_guest_${Date.now()}`;
    await query(`create role ${role}`);
    await query("create table guarded (id int)");
    await query(`create table guest_owned (id int)`);
    await query(`alter table guest_owned owner to ${role}`);
    await query(`grant usage on schema steward to ${role}`);
    await query(`grant execute on function steward.may_vacuum(regclass) to ${role}`);
    const other = await context.db.pool.connect();
    try {
      await other.query(`set role ${role}`);
      const { rows } = await other.query(
        "select steward.may_vacuum('guarded') as guarded, steward.may_vacuum('guest_owned') as owned",
      );
      expect(rows[0]).toEqual({ guarded: false, owned: true });
      // Another session's temporary table is off limits to anyone.
      await other.query("reset role");
      await other.query("create temporary table scratch (id int)");
      const { rows: scratch } = await other.query("select 'scratch'::regclass::oid::int as oid");
      await expect(
        query("select * from steward.vacuum_plan(array[$1::int::oid::regclass])", [scratch[0].oid]),
      ).rejects.toMatchObject({
        code: "22023",
        message: expect.stringMatching(/^role \w+ may not vacuum pg_temp_\d+\.scratch$/),
      });
    } finally {
      await other.query("reset role; discard temporary");
      other.release();
      await query(`drop table guest_owned`);
      await query(`drop owned by ${role}`);
      await query(`drop role ${role}`);
    }
  });
});

describe("steward run", () => {
  it("starts each maintenance task by hand and waits for it", async () => {
    await query("create table orders_by_hand (id int primary key)");
    await query("create materialized view orders_by_hand_view as select id from orders_by_hand");
    await query("create unique index on orders_by_hand_view (id)");
    await query("select steward.register_materialized_view('orders_by_hand_view')");
    await startWorker();
    const runs: Array<[string, string?]> = [
      ["refresh_materialized_view", '{"view": "public.orders_by_hand_view"}'],
      ["schedule_refreshes"],
      ["vacuum_tables", '{"tables": ["public.orders_by_hand"]}'],
      ["cleanup"],
    ];
    const results = await Promise.all(
      runs.map(([task, payload]) =>
        runCli(["run", task, ...(payload ? [payload] : []), "--wait", "--timeout", "60s"], {
          DATABASE_URL: context.db.url,
        }),
      ),
    );
    for (const [index, result] of results.entries()) {
      expect({ task: runs[index]![0], code: result.code, stderr: result.stderr }).toEqual({
        task: runs[index]![0],
        code: 0,
        stderr: "",
      });
      expect(result.stdout).toMatch(/completed/);
    }
    const { rows } = await query("select target from steward.audit_log where action = 'run' order by id");
    expect(rows.map((row) => row.target)).toEqual(expect.arrayContaining(runs.map(([task]) => task)));
  });
});

describe("schedules", () => {
  it("runs schedule_refreshes every minute, vacuum_tables weekly and cleanup hourly, each overridable", () => {
    const schedules = effectiveSchedules(schedulesOf(TASKS), {
      STEWARD_CRON_CLEANUP: "*/15 * * * *",
      STEWARD_CRON_VACUUM_TABLES: "off",
    });
    const maintenance = schedules.filter((s) => ["schedule_refreshes", "vacuum_tables", "cleanup"].includes(s.task));
    expect(maintenance.map((s) => [s.task, s.pattern, s.enabled])).toEqual([
      ["schedule_refreshes", "* * * * *", true],
      ["vacuum_tables", "0 3 * * 0", false],
      ["cleanup", "*/15 * * * *", true],
    ]);
  });
});
