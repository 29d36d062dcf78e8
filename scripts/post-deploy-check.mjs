#!/usr/bin/env zx
// Usage: npx zx scripts/post-deploy-check.mjs [--skip-smoke] [--timeout 2m] [--view schema.name]
//
// After a deploy: migrates, verifies the installation (steward verify), and smoke-tests each task
// by running it with a harmless payload and waiting for its outcome (`steward run <task> <payload>
// --wait`), so a worker must be running. Prints a checklist (✔ passed, ✘ failed, – skipped) and
// exits 1 if anything failed. --view names a registered materialized view to refresh as the
// refresh_materialized_view smoke test (skipped without it).
import { $, argv } from "zx";
import { STEWARD, withPool } from "./lib/steward.mjs";

const { TASK_NAMES } = await import("../tasks/index.ts");
const timeout = String(argv.timeout ?? "2m");
const checks = [];
const record = (status, what, detail = "") => {
  checks.push({ status, what, detail });
  const mark = { pass: "✔", fail: "✘", skip: "–" }[status];
  console.log(`${mark} ${what}${detail ? `: ${detail}` : ""}`);
};
/** What a command said last: its result on stdout, else its error on stderr. */
const said = (output) => (output.stdout.trim() || output.stderr.trim()).split("\n").at(-1) ?? "";
const steward = (args) => $({ nothrow: true, quiet: true })`${STEWARD} ${args}`;

const migrated = await steward(["migrate"]);
record(migrated.exitCode === 0 ? "pass" : "fail", "migrate", said(migrated));

const verified = await steward(["verify"]);
record(verified.exitCode === 0 ? "pass" : "fail", "verify", verified.exitCode === 0 ? "" : said(verified));

if (argv["skip-smoke"]) {
  record("skip", "smoke tests", "--skip-smoke");
} else {
  const recalculation = await withPool(async (pool) => {
    const { rows } = await pool
      .query("select name from steward.recalculations order by name limit 1")
      .catch(() => ({ rows: [] }));
    return rows[0]?.name;
  });
  // Harmless payloads: nothing is changed that the task would not change on its schedule.
  const smoke = {
    drain_invalidations: {},
    schedule_refreshes: {},
    rollup_requests: {},
    cleanup: {},
    vacuum_tables: { tables: ["steward.settings"] },
    refresh_materialized_view: argv.view ? { view: String(argv.view) } : undefined,
    // A run over no keys: starts and ends at once.
    recalculate: recalculation ? { name: recalculation, keys: [] } : undefined,
  };
  for (const task of TASK_NAMES) {
    if (task === "recalculate_batch") continue; // enqueued by recalculate, never by hand
    const payload = smoke[task];
    if (payload === undefined) {
      record(
        "skip",
        `run ${task}`,
        task in smoke ? "nothing to run it on (see --view, or register a recalculation)" : "no smoke payload known",
      );
      continue;
    }
    const began = Date.now();
    const ran = await steward([
      "run",
      task,
      JSON.stringify(payload),
      "--wait",
      "--timeout",
      timeout,
      "--max-attempts",
      "1",
    ]);
    const detail = ran.exitCode === 3 ? `no outcome within ${timeout}: is a worker running?` : said(ran);
    record(
      ran.exitCode === 0 ? "pass" : "fail",
      `run ${task}`,
      ran.exitCode === 0 ? `${Date.now() - began} ms` : detail,
    );
  }
}

const failed = checks.filter((check) => check.status === "fail").length;
console.log(`\n${checks.length - failed} of ${checks.length} checks passed or skipped, ${failed} failed`);
process.exit(failed ? 1 : 0);
