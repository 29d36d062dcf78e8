// The alert rules of deploy/alerts.yml: their own unit tests pass under promtool, and every series
// (and every label they group by) is on a real /metrics scrape of a worker, so no rule watches
// a name nothing exports.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import type { RunningWorker } from "../src/worker/runner.ts";
import { startTestWorker, useTestDatabase } from "./helpers.ts";

const RULES = path.join(PACKAGE_ROOT, "deploy", "alerts.yml");
const RULE_TESTS = path.join(PACKAGE_ROOT, "deploy", "alerts.test.yml");

// The Debian package `prometheus` ships promtool (.ci/run installs it when it is missing).
const promtool = spawnSync("promtool", ["--version"]).status === 0;

describe("the alert rules under promtool", () => {
  it.skipIf(!promtool)("pass promtool check rules and their unit tests (deploy/alerts.test.yml)", () => {
    const check = spawnSync("promtool", ["check", "rules", RULES], { encoding: "utf8" });
    expect(check.stdout + check.stderr).toContain("SUCCESS");
    expect(check.status).toBe(0);
    const test = spawnSync("promtool", ["test", "rules", RULE_TESTS], { encoding: "utf8", timeout: 60_000 });
    expect(test.stdout + test.stderr, test.stdout + test.stderr).toContain("SUCCESS");
    expect(test.status).toBe(0);
  });

  if (!promtool) {
    it.skip("promtool is not installed: apt-get install prometheus (or put promtool on PATH) to test deploy/alerts.yml", () => {});
  }
});

interface Selector {
  metric: string;
  matchers: Record<string, string>;
}

/** The expressions of the rule file: every `expr:` value, block scalars included. */
function expressions(text: string): string[] {
  const lines = text.split("\n");
  const found: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const match = /^(\s*)expr:\s*(.*)$/.exec(lines[i]!);
    if (!match) continue;
    if (match[2] !== "|") {
      found.push(match[2]!);
      continue;
    }
    const block: string[] = [];
    while (i + 1 < lines.length && (lines[i + 1]!.trim() === "" || lines[i + 1]!.search(/\S/) > match[1]!.length)) {
      block.push(lines[++i]!);
    }
    found.push(block.join("\n"));
  }
  return found;
}

function selectors(expression: string): Selector[] {
  return [...expression.matchAll(/\b(steward_[a-z0-9_]+)(\{([^}]*)\})?/g)].map((match) => ({
    metric: match[1]!,
    matchers: Object.fromEntries([...(match[3] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!])),
  }));
}

/** `by (a, b) (steward_x…`: the labels a rule groups a series by. */
function groupings(expression: string): Array<{ metric: string; labels: string[] }> {
  return [...expression.matchAll(/by \(([^)]*)\) \((steward_[a-z0-9_]+)/g)].map((match) => ({
    metric: match[2]!,
    labels: match[1]!.split(",").map((label) => label.trim()),
  }));
}

/** The samples of a Prometheus text exposition: name and labels. */
function samples(text: string): Array<{ metric: string; labels: Record<string, string> }> {
  return text
    .split("\n")
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => {
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? /.exec(line)!;
      const labels = Object.fromEntries(
        [...(match[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]),
      );
      return { metric: match[1]!, labels };
    });
}

describe("the series the alert rules use", () => {
  const context = useTestDatabase();
  let worker: RunningWorker | undefined;
  afterAll(async () => {
    await worker?.stop();
  });

  const text = fs.readFileSync(RULES, "utf8");
  const used = expressions(text).flatMap(selectors);
  const grouped = expressions(text).flatMap(groupings);
  // steward_circuit_state comes from the circuits capability's metric source.
  const isCircuit = (metric: string) => metric.startsWith("steward_circuit_");

  /** A worker's /metrics after the database has something for every rule to watch. */
  async function scrape(): Promise<ReturnType<typeof samples>> {
    const { pool } = context.db;
    // Requests in the bucket /metrics reports: the last 5-minute bucket that ended a minute ago
    // (waiting out its last seconds, so the rollup and the scrape see the same one).
    const { rows } = await pool.query(`
      select date_bin('5 minutes', now() - interval '1 minute', timestamptz '2000-01-01 00:00:00+00') - interval '5 minutes' as bucket,
             (extract(epoch from date_bin('5 minutes', now() - interval '1 minute', timestamptz '2000-01-01 00:00:00+00')
                                 + interval '6 minutes' - now()) * 1000)::float8 as ms_left`);
    if (rows[0].ms_left < 15_000) await new Promise((resolve) => setTimeout(resolve, rows[0].ms_left + 100));
    await pool.query(
      `select steward.record_requests(jsonb_build_array(
         jsonb_build_object('at', date_bin('5 minutes', now() - interval '1 minute', timestamptz '2000-01-01 00:00:00+00') - interval '4 minutes',
                            'endpoint', '/alerts', 'method', 'GET', 'status', 429, 'duration_ms', 12)));
       select steward.rollup_requests();
       insert into steward.dead_letters (source, task_identifier, attempts, max_attempts, last_error)
       values ('job', 'alert_test', 1, 1, 'for the alert rules');
       create materialized view alert_view as select 1 as id;
       create unique index on alert_view (id);
       select steward.register_materialized_view('alert_view', refresh_every => '1 hour');
       select graphile_worker.add_job('alert_test_unserved', '{}');`,
    );
    if (await circuitsRegistered()) {
      await pool.query(`
        select steward.circuit_configure('alert-test', 1, '1 hour');
        select steward.circuit_record('alert-test', false);`);
    }
    worker = await startTestWorker(context.db, { tasks: [], health: true });
    return samples(await (await fetch(`http://127.0.0.1:${worker.healthPort}/metrics`)).text());
  }

  let scraped: Promise<ReturnType<typeof samples>> | undefined;
  const scrapeOnce = () => (scraped ??= scrape());
  const circuitsRegistered = async () =>
    (
      await context.db.pool.query(
        "select exists (select from steward.metric_sources where name = 'circuits') as registered",
      )
    ).rows[0].registered as boolean;

  function missing(series: ReturnType<typeof samples>, metric: (name: string) => boolean) {
    const absent = used
      .filter((selector) => metric(selector.metric))
      .filter(
        (selector) =>
          !series.some(
            (sample) =>
              sample.metric === selector.metric &&
              Object.entries(selector.matchers).every(([key, value]) => sample.labels[key] === value),
          ),
      );
    const ungrouped = grouped
      .filter((grouping) => metric(grouping.metric))
      .filter(
        (grouping) =>
          !series.some(
            (sample) => sample.metric === grouping.metric && grouping.labels.every((label) => label in sample.labels),
          ),
      );
    return { absent, ungrouped };
  }

  it("finds the rules' series in the rule file", () => {
    expect(new Set(used.map((selector) => selector.metric)).size).toBeGreaterThanOrEqual(12);
    expect(used).toContainEqual({ metric: "steward_workers", matchers: { state: "alive" } });
  });

  // 60 s: the scrape may first wait up to 15 s for the reported request bucket to turn over.
  it("exports every series the rules use, with the labels they group by, on a real scrape", async () => {
    const series = await scrapeOnce();
    expect(missing(series, (name) => !isCircuit(name))).toEqual({ absent: [], ungrouped: [] });
  }, 60_000);

  it("exports the circuit series the rules use", async (test) => {
    if (!(await circuitsRegistered()))
      test.skip("steward.circuit_metrics() (the circuits capability's metric source) is not registered yet");
    const series = await scrapeOnce();
    expect(missing(series, isCircuit)).toEqual({ absent: [], ungrouped: [] });
  });
});
