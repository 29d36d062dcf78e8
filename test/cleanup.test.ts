import { describe, expect, it } from "vitest";
import { maintenanceLog, useTestDatabase, useTestWorker, withSettings } from "./helpers.ts";

const context = useTestDatabase();
const { runJob } = useTestWorker(context);
const query = (text: string, values?: unknown[]) => context.db.pool.query(text, values);

describe("cleanup", () => {
  it("deletes rows past retention in batches, each its own transaction, and keeps the rest", async () => {
    await query(`
      insert into steward.refresh_log (view, started_at, finished_at, duration_ms, status)
      select 'public.old', now() - interval '60 days', now() - interval '60 days', 1, 'ok' from generate_series(1, 2500)
      union all
      select 'public.recent', now() - interval '1 day', now() - interval '1 day', 1, 'ok' from generate_series(1, 10)`);
    await query(`
      insert into steward.audit_log (at, actor, action, target)
      select now() - interval '400 days', 'test', 'ancient', null from generate_series(1, 1200)`);
    // A step of another capability, which notes the transaction of every batch.
    await query("create table expiring (at timestamptz not null)");
    await query("create table cleanup_batches (transaction_id bigint not null, deleted bigint not null)");
    await query("insert into expiring select now() - interval '2 days' from generate_series(1, 3500)");
    await query("insert into expiring select now() from generate_series(1, 5)");
    await query(`
      create function public.cleanup_expiring(batch_size integer) returns bigint language plpgsql as $$
      declare deleted bigint;
      begin
        deleted := steward.delete_older_than('public.expiring', 'at', now() - interval '1 day', batch_size);
        insert into public.cleanup_batches values (txid_current(), deleted);
        return deleted;
      end $$`);
    await query(
      "insert into steward.cleanup_steps (name, function, description) values ('expiring', 'public.cleanup_expiring(integer)', 'test rows')",
    );
    try {
      expect(await runJob("cleanup")).toEqual({ state: "completed" });
    } finally {
      await query("delete from steward.cleanup_steps where name = 'expiring'");
    }

    expect(await maintenanceLog(context.db, "cleanup", "refresh_log")).toEqual([
      { status: "ok", detail: { deleted: 2500, batches: 3, batch_size: 1000, complete: true } },
    ]);
    expect(await maintenanceLog(context.db, "cleanup", "audit_log")).toEqual([
      { status: "ok", detail: { deleted: 1200, batches: 2, batch_size: 1000, complete: true } },
    ]);
    expect(await maintenanceLog(context.db, "cleanup", "expiring")).toEqual([
      { status: "ok", detail: { deleted: 3500, batches: 4, batch_size: 1000, complete: true } },
    ]);
    const { rows: batches } = await query(
      "select count(distinct transaction_id)::int as transactions, array_agg(deleted order by deleted desc) as deleted from cleanup_batches",
    );
    expect(batches[0]).toEqual({ transactions: 4, deleted: ["1000", "1000", "1000", "500"] });
    const { rows } = await query(`
      select (select count(*)::int from steward.refresh_log where view = 'public.old') as old_refreshes,
             (select count(*)::int from steward.refresh_log where view = 'public.recent') as recent_refreshes,
             (select count(*)::int from steward.audit_log where action = 'ancient') as ancient_audits,
             (select count(*)::int from expiring) as expiring`);
    expect(rows[0]).toEqual({ old_refreshes: 0, recent_refreshes: 10, ancient_audits: 0, expiring: 5 });
  });

  it("gives every step one batch when the time budget is spent, and marks it incomplete", async () => {
    await query(`
      insert into steward.refresh_log (view, started_at, finished_at, duration_ms, status)
      select 'public.old', now() - interval '60 days', now() - interval '60 days', 1, 'ok' from generate_series(1, 250)`);
    await withSettings(
      context.db.pool,
      { "maintenance.cleanup_time_budget": "0 seconds", "maintenance.cleanup_batch_size": "100" },
      async () => {
        expect(await runJob("cleanup")).toEqual({ state: "completed" });
      },
    );
    const log = await maintenanceLog(context.db, "cleanup", "refresh_log");
    expect(log.at(-1)).toEqual({
      status: "ok",
      detail: { deleted: 100, batches: 1, batch_size: 100, complete: false },
    });
    expect(
      (await query("select count(*)::int as n from steward.refresh_log where view = 'public.old'")).rows[0].n,
    ).toBe(150);
  });

  it("logs a failing step, runs the others, and fails the job naming the step", async () => {
    await query(`
      create function public.cleanup_broken(batch_size integer) returns bigint language plpgsql as $$
      begin raise exception 'the broken step broke'; end $$`);
    await query(
      "insert into steward.cleanup_steps (name, function, description) values ('broken', 'public.cleanup_broken(integer)', 'fails')",
    );
    try {
      expect(await runJob("cleanup")).toMatchObject({
        state: "failed",
        error: expect.stringMatching(/cleanup: 1 of \d+ steps failed \(broken: the broken step broke\)/),
      });
    } finally {
      await query("delete from steward.cleanup_steps where name = 'broken'");
    }
    expect((await maintenanceLog(context.db, "cleanup", "broken")).at(-1)).toMatchObject({
      status: "failed",
      detail: { error: "the broken step broke" },
    });
    expect((await maintenanceLog(context.db, "cleanup", "refresh_log")).at(-1)).toMatchObject({ status: "ok" });
  });

  it("refuses a batch size below 1", async () => {
    await expect(query("select steward.run_cleanup_step('refresh_log', 0)")).rejects.toMatchObject({
      code: "22023",
      message: "batch_size must be a positive integer, got 0",
    });
    await expect(query("select steward.run_cleanup_step('nope', 10)")).rejects.toMatchObject({ code: "P0002" });
  });
});
