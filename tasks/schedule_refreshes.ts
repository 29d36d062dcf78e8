// Every minute: enqueues a refresh of each registered view whose refresh_every has passed, views
// that read other registered views after them, one pending job per view (its job key).
import { scheduleDueRefreshes } from "../src/worker/materialized-views.ts";
import { payloadObject } from "../src/worker/payload.ts";
import { defineTask } from "../src/worker/task.ts";

const TASK = "schedule_refreshes";

export const scheduleRefreshesTask = defineTask<Record<string, never>>({
  identifier: TASK,
  description: "enqueue the refreshes of registered materialized views that are due",
  schedule: { pattern: "* * * * *", description: "every minute" },
  parse(payload) {
    payloadObject(TASK, payload, []);
    return {};
  },
  async run(_payload, { pool }) {
    const scheduled = await scheduleDueRefreshes(pool);
    return { scheduled: scheduled.length, views: scheduled.map((s) => s.view) };
  },
});
