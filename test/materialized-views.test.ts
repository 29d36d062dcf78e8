import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PermanentError } from "../src/errors.ts";
import { refreshMaterializedView } from "../src/worker/materialized-views.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { refreshMaterializedViewTask } from "../tasks/refresh_materialized_view.ts";
import { TASKS } from "../tasks/index.ts";
import { eventually, runJobOnce, startTestWorker, useTestDatabase, whileLocked, withSettings } from "./helpers.ts";

const context = useTestDatabase();
const query = (text: string, values?: unknown[]) => context.db.pool.query(text, values);
let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

/** A materialized view of `rows` rows, unique on id, whose query sleeps `sleepSeconds` once. */
async function createView(name: string, options: { rows?: number; sleepSeconds?: number; withData?: boolean } = {}) {
  // A MATERIALIZED CTE runs its pg_sleep once however the join is planned.
  await query(`
    create materialized view ${name} as
      with pause as materialized (select pg_sleep(${options.sleepSeconds ?? 0}) as slept)
      select g as id, md5(g::text) as label from generate_series(1, ${options.rows ?? 1000}) g, pause
    with ${options.withData === false ? "no " : ""}data`);
  await query(`create unique index on ${name} (id)`);
}

async function counts() {
  const { rows } = await query(
    "select (select count(*)::int from steward.materialized_views) as views, (select count(*)::int from steward.audit_log) as audits",
  );
  return rows[0];
}

/** Readers query `view` in a loop from their own connections while `refresh` runs. */
async function readWhileRefreshing(view: string, refresh: () => Promise<unknown>) {
  const application = `steward test reader ${view}`;
  const readers = await Promise.all(
    Array.from({ length: 4 }, async () => {
      const client = new pg.Client({ connectionString: context.db.url, application_name: application });
      await client.connect();
      return client;
    }),
  );
  const reads: Array<{ start: number; end: number }> = [];
  let stop = false;
  const loops = readers.map(async (client) => {
    while (!stop) {
      const start = performance.now();
      await client.query(`select count(*) from ${view}`);
      reads.push({ start, end: performance.now() });
    }
  });
  let lockWaits = 0;
  const sampler = (async () => {
    while (!stop) {
      const { rows } = await query(
        "select count(*)::int as waiting from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock'",
        [application],
      );
      lockWaits += rows[0].waiting;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    await eventually(async () => reads.length >= 8, { what: "the readers to get going" });
    const began = performance.now();
    await refresh();
    const ended = performance.now();
    return {
      lockWaits,
      readsDuring: reads.filter((read) => read.start >= began && read.end <= ended).length,
      slowestReadMs: Math.max(...reads.filter((read) => read.end >= began).map((read) => read.end - read.start)),
    };
  } finally {
    stop = true;
    await Promise.all([...loops, sampler]);
    await Promise.all(readers.map((client) => client.end()));
  }
}

describe("register_materialized_view", () => {
  it("refuses a view no concurrent refresh can use, with a HINT whose index makes it registrable, changing nothing", async () => {
    await query("create table refusal_orders (id int primary key, customer_id int not null)");
    await query("insert into refusal_orders select g, g % 7 from generate_series(1, 100) g");
    await query(
      "create materialized view refusal_totals as select customer_id, count(*) as orders from refusal_orders group by customer_id",
    );
    await query("create index refusal_by_customer on refusal_totals (customer_id)");
    await query("create unique index refusal_partial on refusal_totals (customer_id) where customer_id > 0");
    await query("create unique index refusal_expression on refusal_totals ((customer_id + 0))");
    const before = await counts();

    const refusal = await query("select steward.register_materialized_view('refusal_totals')").catch((error) => error);
    expect(refusal).toMatchObject({
      code: "22023",
      message: "materialized view public.refusal_totals has no unique index REFRESH ... CONCURRENTLY can use",
      detail: expect.stringContaining(
        "refusal_by_customer (not unique), refusal_expression (indexes an expression), refusal_partial (has a WHERE clause)",
      ),
      hint: expect.stringMatching(/^create unique index on public\.refusal_totals \(customer_id\);/),
    });
    expect(await counts()).toEqual(before);

    await query(refusal.hint.slice(0, refusal.hint.indexOf(";") + 1));
    const { rows } = await query("select * from steward.register_materialized_view('refusal_totals', '5 minutes')");
    expect(rows[0]).toMatchObject({
      view: "public.refusal_totals",
      refresh_concurrently: true,
      refresh_every: { minutes: 5 },
    });
    expect(await counts()).toEqual({ views: before.views + 1, audits: before.audits + 1 });
  });

  it("refuses a table and a plain view with 22023, naming what they are", async () => {
    await query("create table not_a_view (id int)");
    await query("create view plain_view as select 1 as id");
    await expect(query("select steward.register_materialized_view('not_a_view')")).rejects.toMatchObject({
      code: "22023",
      message: "public.not_a_view is not a materialized view (it is a table)",
    });
    await expect(
      query("select steward.register_materialized_view('plain_view', concurrently => false)"),
    ).rejects.toMatchObject({
      code: "22023",
      message: "public.plain_view is not a materialized view (it is a view)",
      hint: expect.stringContaining("always current"),
    });
    await expect(query("select steward.register_materialized_view(null)")).rejects.toMatchObject({ code: "22004" });
  });

  it("refuses a bad refresh_every or debounce", async () => {
    await createView("bad_arguments");
    await expect(
      query("select steward.register_materialized_view('bad_arguments', '0 seconds')"),
    ).rejects.toMatchObject({
      code: "22023",
      message: "refresh_every must be a positive interval or null, got 00:00:00",
    });
    await expect(
      query("select steward.register_materialized_view('bad_arguments', debounce => '-1 second')"),
    ).rejects.toMatchObject({ code: "22023" });
  });

  it("warns when the key holds NULLs, from the data and from pg_stats", async () => {
    await query(
      "create materialized view null_keys as select v as key, 'x' as label from (values (1), (null), (null)) t(v)",
    );
    await query("create unique index on null_keys (key)");
    await createView("no_null_keys");
    const client = await context.db.pool.connect();
    const notices: string[] = [];
    client.on("notice", (notice) => notices.push(notice.message ?? ""));
    try {
      await client.query("select steward.register_materialized_view('no_null_keys')");
      expect(notices).toEqual([]);
      await client.query("select steward.register_materialized_view('null_keys')");
      await client.query("analyze null_keys");
      await client.query("select steward.register_materialized_view('null_keys')");
    } finally {
      client.release();
    }
    expect(notices).toHaveLength(2);
    expect(notices[0]).toMatch(
      /^the key of public\.null_keys \(index public\.null_keys_key_idx\) holds NULLs in key: /,
    );
    expect(notices[1]).toBe(notices[0]);
  });

  it("unregisters, auditing it, and says whether there was anything to remove", async () => {
    await createView("short_lived");
    await query("select steward.register_materialized_view('short_lived')");
    expect((await query("select steward.unregister_materialized_view('short_lived') as removed")).rows[0].removed).toBe(
      true,
    );
    expect((await query("select steward.unregister_materialized_view('short_lived') as removed")).rows[0].removed).toBe(
      false,
    );
    const { rows } = await query(
      "select action from steward.audit_log where target = 'public.short_lived' order by id",
    );
    expect(rows.map((row) => row.action)).toEqual(["register_materialized_view", "unregister_materialized_view"]);
  });
});

describe("refreshing", () => {
  it("refreshes concurrently while readers keep reading: no reader ever waits on a lock", async () => {
    await createView("busy_view", { sleepSeconds: 1.5 });
    await query("select steward.register_materialized_view('busy_view')");
    let entry: Awaited<ReturnType<typeof refreshMaterializedView>> | undefined;
    const readers = await readWhileRefreshing("busy_view", async () => {
      entry = await refreshMaterializedView(context.db.pool, "public.busy_view");
    });
    expect(entry).toMatchObject({ status: "ok", ran_concurrently: true });
    expect(readers.lockWaits).toBe(0);
    expect(readers.readsDuring).toBeGreaterThan(0);
  });

  it("makes readers wait when it refreshes plainly (the control of the test above)", async () => {
    await createView("blocking_view", { sleepSeconds: 1.5 });
    await query("select steward.register_materialized_view('blocking_view', concurrently => false)");
    let entry: Awaited<ReturnType<typeof refreshMaterializedView>> | undefined;
    const readers = await readWhileRefreshing("blocking_view", async () => {
      entry = await refreshMaterializedView(context.db.pool, "public.blocking_view");
    });
    expect(entry).toMatchObject({ status: "ok", ran_concurrently: false });
    expect(readers.lockWaits).toBeGreaterThan(0);
  });

  it("fills an unpopulated view plainly, then refreshes it concurrently", async () => {
    await createView("empty_view", { withData: false });
    await query("select steward.register_materialized_view('empty_view')");
    expect(await refreshMaterializedView(context.db.pool, "public.empty_view")).toMatchObject({
      status: "ok",
      ran_concurrently: false,
    });
    expect(await refreshMaterializedView(context.db.pool, "public.empty_view")).toMatchObject({
      status: "ok",
      ran_concurrently: true,
    });
    expect((await query("select count(*)::int as n from empty_view")).rows[0].n).toBe(1000);
  });

  it("never runs two refreshes of one view at once: three at once take turns", async () => {
    await createView("contended_view", { sleepSeconds: 0.4 });
    await query("select steward.register_materialized_view('contended_view')");
    const entries = await withSettings(context.db.pool, { "maintenance.refresh_lock_wait": "1 minute" }, () =>
      Promise.all([1, 2, 3].map(() => refreshMaterializedView(context.db.pool, "public.contended_view"))),
    );
    expect(entries.map((entry) => entry.status)).toEqual(["ok", "ok", "ok"]);
    const { rows } = await query(`
      with runs as (
        select id, tstzrange(started_at + waited_ms * interval '1 millisecond', finished_at) as ran
          from steward.refresh_log where view = 'public.contended_view')
      select count(*)::int as overlapping from runs a join runs b on a.id < b.id and a.ran && b.ran`);
    expect(rows[0].overlapping).toBe(0);
    expect(Math.max(...entries.map((entry) => entry.waited_ms))).toBeGreaterThan(0);
  });

  it("records skipped when another refresh of the view holds it past refresh_lock_wait", async () => {
    await createView("held_view");
    await query("select steward.register_materialized_view('held_view')");
    await whileLocked(
      context.db,
      "select pg_advisory_xact_lock(steward.refresh_lock_key('public.held_view'))",
      async () => {
        const waited = await withSettings(
          context.db.pool,
          { "maintenance.refresh_lock_wait": "300 milliseconds" },
          () => refreshMaterializedView(context.db.pool, "public.held_view"),
        );
        expect(waited).toMatchObject({
          status: "skipped",
          ran_concurrently: null,
          error: expect.stringContaining("another refresh"),
        });
        expect(waited.waited_ms).toBeGreaterThanOrEqual(300);
        const immediate = await withSettings(context.db.pool, { "maintenance.refresh_lock_wait": "0 seconds" }, () =>
          refreshMaterializedView(context.db.pool, "public.held_view"),
        );
        expect(immediate.status).toBe("skipped");
      },
    );
    expect(await refreshMaterializedView(context.db.pool, "public.held_view")).toMatchObject({ status: "ok" });
  });

  it("logs a failed refresh with its error, keeps the last good time, and fails the job so it is retried", async () => {
    await query("create table fragile_source (id int primary key, divisor int)");
    await query("insert into fragile_source values (1, 1)");
    await query("create materialized view fragile as select id, 100 / divisor as quotient from fragile_source");
    await query("create unique index on fragile (id)");
    await query("select steward.register_materialized_view('fragile')");
    expect(await refreshMaterializedView(context.db.pool, "public.fragile")).toMatchObject({ status: "ok" });
    const { rows: before } = await query(
      "select last_refreshed_at from steward.materialized_views where view = 'public.fragile'",
    );

    await query("update fragile_source set divisor = 0");
    const failed = await refreshMaterializedView(context.db.pool, "public.fragile");
    expect(failed).toMatchObject({ status: "failed", ran_concurrently: true, error: "division by zero" });
    const { rows: after } = await query(
      "select last_refreshed_at from steward.materialized_views where view = 'public.fragile'",
    );
    expect(after[0].last_refreshed_at).toEqual(before[0].last_refreshed_at);

    worker = await startTestWorker(context.db, { tasks: TASKS });
    expect(await runJobOnce(context.db, "refresh_materialized_view", { view: "public.fragile" })).toMatchObject({
      state: "failed",
      error: "refresh of public.fragile failed: division by zero",
    });
  });

  it("applies refresh_statement_timeout", async () => {
    await createView("slow_view", { sleepSeconds: 3 });
    await query("select steward.register_materialized_view('slow_view')");
    const entry = await withSettings(
      context.db.pool,
      { "maintenance.refresh_statement_timeout": "200 milliseconds" },
      () => refreshMaterializedView(context.db.pool, "public.slow_view"),
    );
    expect(entry).toMatchObject({ status: "failed", error: "canceling statement due to statement timeout" });
  });

  it("cancels a long refresh when the worker stops, logging it failed for a later retry", async () => {
    await query("create view endless_pause as select pg_sleep(600)::text as slept");
    await query("create materialized view endless_view as select 1 as id from endless_pause with no data");
    await query("create unique index on endless_view (id)");
    await query("select steward.register_materialized_view('endless_view')");
    worker = await startTestWorker(context.db, { tasks: TASKS, config: { shutdownTimeoutMs: 4000 } });
    const { rows } = await query(
      `select id::text from graphile_worker.add_job('refresh_materialized_view', '{"view": "public.endless_view"}')`,
    );
    await eventually(
      async () =>
        (
          await query(
            `select 1 from pg_stat_activity
              where datname = current_database() and wait_event = 'PgSleep' and query like '%refresh_materialized_view%'`,
          )
        ).rowCount === 1,
      { what: "the refresh to be running" },
    );
    // Without the cancel, stop() would wait for the 10-minute refresh and the test would time out.
    await worker.stop("test");
    worker = undefined;
    const { rows: log } = await query(
      "select status, error from steward.refresh_log where view = 'public.endless_view'",
    );
    expect(log).toEqual([{ status: "failed", error: "canceling statement due to user request" }]);
    const { rows: job } = await query(
      "select attempts, locked_at, last_error from graphile_worker.jobs where id = $1",
      [rows[0].id],
    );
    expect(job[0]).toMatchObject({
      attempts: 1,
      locked_at: null,
      last_error: expect.stringContaining("canceling statement"),
    });
    await query("delete from graphile_worker._private_jobs where id = $1", [rows[0].id]);
  });

  it("treats an unknown view, a table and an unregistered view as permanent errors", async () => {
    await query("create table just_a_table (id int)");
    await createView("never_registered");
    const cases: Array<[string, string]> = [
      ["public.no_such_view", 'relation "public.no_such_view" does not exist'],
      ["public.just_a_table", "public.just_a_table is not a materialized view (it is a table)"],
      ["public.never_registered", "materialized view public.never_registered is not registered"],
      ["a.b.c.d", "improper relation name"],
    ];
    for (const [view, message] of cases) {
      const error = await refreshMaterializedView(context.db.pool, view).catch((caught) => caught);
      expect(error).toBeInstanceOf(PermanentError);
      expect(error.message).toContain(`refresh_materialized_view: ${message}`);
    }
    expect(() => refreshMaterializedViewTask.parse({})).toThrow(PermanentError);
    expect(() => refreshMaterializedViewTask.parse({ view: "public.x", force: true })).toThrow(
      'unknown payload field "force"',
    );

    worker = await startTestWorker(context.db, { tasks: TASKS });
    const outcome = await runJobOnce(context.db, "refresh_materialized_view", { view: "public.just_a_table" });
    expect(outcome).toMatchObject({
      state: "failed",
      error: expect.stringContaining("is not a materialized view (it is a table)"),
    });
  });
});

describe("scheduling refreshes", () => {
  // steward.refresh_plan walks the catalog; PostgreSQL estimates it far above jit_above_cost, and
  // where JIT is available (PostgreSQL 15 from Debian) compiling it took 0.1 to 2 s per call,
  // inside the invalidation drain's transaction: enqueues of its tags waited seconds.
  it("turns JIT off in every function that reads refresh_plan", async () => {
    const { rows } = await context.db.pool.query(`
      select p.oid::regprocedure::text as function, coalesce('jit=off' = any (p.proconfig), false) as jit_off
        from pg_proc p
       where p.pronamespace = 'steward'::regnamespace and p.prosrc like '%steward.refresh_plan%'
       order by 1`);
    expect(rows.map((row) => row.function)).toContain("steward.schedule_refresh(regclass,interval)");
    expect(rows.filter((row) => !row.jit_off)).toEqual([]);
  });

  it("refreshes views that read other registered views after them, whatever order they were asked in", async () => {
    await query("create table chain_source (id int primary key)");
    await query("insert into chain_source select generate_series(1, 10)");
    // chain_c reads chain_b through a plain view: the order must see through it.
    const slowly = (source: string) =>
      `with pause as materialized (select pg_sleep(0.3)) select id from ${source}, pause`;
    await query(`create materialized view chain_a as ${slowly("chain_source")}`);
    await query(`create materialized view chain_b as ${slowly("chain_a")}`);
    await query("create view chain_b_view as select id from chain_b");
    await query(`create materialized view chain_c as ${slowly("chain_b_view")}`);
    for (const view of ["chain_a", "chain_b", "chain_c"]) await query(`create unique index on ${view} (id)`);
    for (const view of ["chain_c", "chain_b", "chain_a"]) {
      await query("select steward.register_materialized_view($1, '1 hour', debounce => '0 seconds')", [view]);
    }
    const { rows: plan } = await query(
      "select view, depth, queue_name, reads from steward.refresh_plan where view like 'public.chain_%' order by view",
    );
    expect(plan).toEqual([
      { view: "public.chain_a", depth: 0, queue_name: "steward:refresh:public.chain_a", reads: [] },
      { view: "public.chain_b", depth: 1, queue_name: "steward:refresh:public.chain_a", reads: ["public.chain_a"] },
      { view: "public.chain_c", depth: 2, queue_name: "steward:refresh:public.chain_a", reads: ["public.chain_b"] },
    ]);

    await query("insert into chain_source select generate_series(11, 20)");
    // Enqueued deepest first: priority (the depth) and the shared queue still run chain_a first.
    for (const view of ["chain_c", "chain_b", "chain_a"]) await query("select steward.schedule_refresh($1)", [view]);
    worker = await startTestWorker(context.db, { tasks: TASKS });
    const log = await eventually(
      async () => {
        const { rows } = await query(`
          select view, status, started_at + waited_ms * interval '1 millisecond' as locked_at, finished_at
            from steward.refresh_log where view like 'public.chain_%' order by finished_at`);
        return rows.length === 3 && rows;
      },
      { timeoutMs: 30_000, what: "three refreshes" },
    );
    expect(log.map((row) => [row.view, row.status])).toEqual([
      ["public.chain_a", "ok"],
      ["public.chain_b", "ok"],
      ["public.chain_c", "ok"],
    ]);
    expect(log[1].locked_at.getTime()).toBeGreaterThanOrEqual(log[0].finished_at.getTime());
    expect(log[2].locked_at.getTime()).toBeGreaterThanOrEqual(log[1].finished_at.getTime());
    expect((await query("select count(*)::int as n from chain_c")).rows[0].n).toBe(20);
  });

  it("enqueues each due view once, in dependency order, and nothing while its job is pending", async () => {
    await query("create table due_source (id int primary key)");
    await query("create materialized view due_a as select id from due_source");
    await query("create materialized view due_b as select id from due_a");
    await query("create materialized view due_never as select id from due_source");
    for (const view of ["due_a", "due_b", "due_never"]) await query(`create unique index on ${view} (id)`);
    await query("select steward.register_materialized_view('due_b', '1 minute')");
    await query("select steward.register_materialized_view('due_a', '1 minute')");
    await query("select steward.register_materialized_view('due_never')");

    const { rows: first } = await query(
      "select view, job_id::text from steward.schedule_due_refreshes() where view like 'public.due_%'",
    );
    expect(first.map((row) => row.view)).toEqual(["public.due_a", "public.due_b"]);
    const { rows: second } = await query(
      "select view from steward.schedule_due_refreshes() where view like 'public.due_%'",
    );
    expect(second).toEqual([]);
    // An explicit request joins the pending job instead of adding one.
    const { rows: again } = await query("select steward.schedule_refresh('due_a')::text as job_id");
    expect(again[0].job_id).toBe(first[0].job_id);
    const { rows: jobs } = await query(
      "select key, priority, queue_name, max_attempts from graphile_worker.jobs where key like 'steward:refresh:public.due_%' order by key",
    );
    expect(jobs).toEqual([
      { key: "steward:refresh:public.due_a", priority: 0, queue_name: "steward:refresh:public.due_a", max_attempts: 5 },
      { key: "steward:refresh:public.due_b", priority: 1, queue_name: "steward:refresh:public.due_a", max_attempts: 5 },
    ]);
    await query("delete from graphile_worker._private_jobs where key like 'steward:refresh:%'");
  });

  it("holds a requested refresh back until debounce has passed since the last one began", async () => {
    await createView("debounced");
    await query("select steward.register_materialized_view('debounced', debounce => '10 minutes')");
    const runAt = async () => {
      const { rows } = await query("select steward.schedule_refresh('debounced')::text as id");
      const { rows: job } = await query(
        `select j.run_at - m.last_started_at as delay, j.run_at <= now() as is_due
           from graphile_worker.jobs j, steward.materialized_views m
          where j.id = $1 and m.view = 'public.debounced'`,
        [rows[0].id],
      );
      await query("delete from graphile_worker._private_jobs where id = $1", [rows[0].id]);
      return job[0];
    };
    expect((await runAt()).is_due).toBe(true);
    await refreshMaterializedView(context.db.pool, "public.debounced");
    expect(await runAt()).toMatchObject({ is_due: false, delay: { minutes: 10 } });
  });

  it("runs the schedule_refreshes task, which enqueues and the worker refreshes", async () => {
    await createView("scheduled_view");
    await query("select steward.register_materialized_view('scheduled_view', '1 minute')");
    worker = await startTestWorker(context.db, { tasks: TASKS });
    await query("select graphile_worker.add_job('schedule_refreshes', '{}')");
    await eventually(
      async () =>
        (await query("select 1 from steward.refresh_log where view = 'public.scheduled_view' and status = 'ok'"))
          .rowCount === 1,
      { timeoutMs: 30_000, what: "the scheduled refresh" },
    );
  });
});

describe("view staleness on /metrics", () => {
  it("reports seconds since the last good refresh of each registered view, and its refresh interval", async () => {
    await createView("watched_view");
    await query("select steward.register_materialized_view('watched_view', refresh_every => '10 minutes')");
    await query(
      "update steward.materialized_views set last_refreshed_at = now() - interval '1 hour' where view = 'public.watched_view'",
    );
    const { rows } = await context.db.pool.query(
      'select metric, value from steward.metrics() where labels = \'{"view": "public.watched_view"}\' order by metric',
    );
    expect(rows.map((row) => row.metric)).toEqual([
      "steward_materialized_view_refresh_interval_seconds",
      "steward_materialized_view_staleness_seconds",
    ]);
    expect(rows[0].value).toBe(600);
    expect(rows[1].value).toBeGreaterThanOrEqual(3600);
    expect(rows[1].value).toBeLessThan(3600 + 600);
  });

  it("leaves out the refresh interval of a view refreshed only on demand", async () => {
    await createView("on_demand_view");
    await query("select steward.register_materialized_view('on_demand_view')");
    const { rows } = await context.db.pool.query(
      "select metric from steward.metrics() where labels ->> 'view' = 'public.on_demand_view' order by metric",
    );
    expect(rows.map((row) => row.metric)).toEqual(["steward_materialized_view_staleness_seconds"]);
  });
});
