// One definition of a job's state (steward.job_states()), and every reader agreeing with it:
// /metrics (steward_queue_depth), steward.status(), steward.job_outcome() (`steward run --wait`).
import { describe, expect, it } from "vitest";
import type pg from "pg";
import { jobOutcome } from "../src/client/jobs.ts";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

describe("steward.job_states()", () => {
  it("tells ready, scheduled, retrying, running and failed jobs apart, and its readers agree", async () => {
    // A job out of attempts and not running normally becomes a dead letter at once; with the
    // trigger off (inside this transaction, rolled back) it stays, as without pg-steward.
    const client = await context.db.pool.connect();
    try {
      await client.query("begin");
      await client.query("alter table graphile_worker._private_jobs disable trigger _steward_dead_letters");
      const add = async (sql: string) =>
        (await client.query<{ id: string }>(`select id::text from graphile_worker.add_job('test_states', ${sql})`))
          .rows[0]!.id;
      const ids = {
        ready: await add("'{}'::json"),
        scheduled: await add("'{}'::json, run_at => now() + interval '1 hour'"),
        retrying: await add("'{}'::json, max_attempts => 5"),
        running: await add("'{}'::json"),
        failed: await add("'{}'::json, max_attempts => 2"),
      };
      await client.query(
        `update graphile_worker._private_jobs set attempts = 1, last_error = 'boom', run_at = now() + interval '10 minutes' where id = $1;
         update graphile_worker._private_jobs set attempts = 1, locked_at = now(), locked_by = 'test-pool' where id = $2;
         update graphile_worker._private_jobs set attempts = 2, last_error = 'boom' where id = $3;`.replaceAll(
          /\$(\d)/g,
          (_, n) => [ids.retrying, ids.running, ids.failed][Number(n) - 1]!,
        ),
      );

      const { rows } = await client.query(
        "select id::text, state from steward.job_states() where task_identifier = 'test_states' order by id",
      );
      expect(Object.fromEntries(rows.map((row) => [row.id, row.state]))).toEqual(
        Object.fromEntries(Object.entries(ids).map(([state, id]) => [id, state])),
      );

      const { rows: depth } = await client.query(
        "select labels ->> 'state' as state, value from steward.metrics() where metric = 'steward_queue_depth' and labels ->> 'task' = 'test_states' order by 1",
      );
      expect(depth).toEqual(
        ["failed", "ready", "retrying", "running", "scheduled"].map((state) => ({ state, value: 1 })),
      );

      const { rows: status } = await client.query("select steward.status() -> 'queues' as queues");
      expect(status[0].queues.find((q: { task: string }) => q.task === "test_states")).toMatchObject({
        ready: 1,
        scheduled: 1,
        retrying: 1,
        running: 1,
        failed: 1,
      });

      const outcome = (id: string) => jobOutcome(client as unknown as pg.Pool, id);
      expect(await outcome(ids.failed)).toEqual({ state: "failed", attempts: 2, error: "boom", deadLetterId: null });
      expect(await outcome(ids.running)).toMatchObject({ state: "pending", running: true });
      expect(await outcome(ids.retrying)).toMatchObject({ state: "pending", running: false, lastError: "boom" });
      expect(await outcome("999999999")).toEqual({ state: "completed" });
    } finally {
      await client.query("rollback");
      client.release();
    }
  });

  it("is inlined, so a lookup by id reads one job through graphile-worker's index", async () => {
    const { rows } = await context.db.pool.query(
      "explain (format json) select * from steward.job_states() where id = 42",
    );
    const plan = JSON.stringify(rows[0]["QUERY PLAN"]);
    expect(plan).not.toContain("Function Scan");
    expect(plan).toContain("Index Scan");
  });
});
