// Refreshes one registered materialized view: concurrently when it can, one refresh per view at
// a time anywhere, every attempt in steward.refresh_log. Enqueued by schedule_refreshes, by
// steward.schedule_refresh (the invalidation queue's mv:<schema>.<view> tags) or by hand.
import { refreshMaterializedView } from "../src/worker/materialized-views.ts";
import { payloadObject, requiredString } from "../src/worker/payload.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "refresh_materialized_view";

export const refreshMaterializedViewTask = defineTask<{ view: string }>({
  identifier: TASK,
  description: 'refresh one registered materialized view, e.g. {"view": "public.orders_summary"}',
  parse(payload) {
    return { view: requiredString(TASK, payloadObject(TASK, payload, ["view"]), "view") };
  },
  async run({ view }, { pool, signal }) {
    const entry = await refreshMaterializedView(pool, view, { signal });
    if (entry.status === "failed") {
      // Logged in refresh_log already; thrown so the job is retried.
      throw new Error(`refresh of ${entry.view} failed: ${entry.error}`);
    }
    return {
      view: entry.view,
      status: entry.status,
      ranConcurrently: entry.ran_concurrently,
      durationMs: Math.round(entry.duration_ms),
      waitedMs: Math.round(entry.waited_ms),
    };
  },
});
