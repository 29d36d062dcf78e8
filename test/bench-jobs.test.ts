import { describe, expect, it } from "vitest";
import { SCENARIOS } from "../bench/index.ts";
import { fastestBaseline, jobsFastScenario } from "../bench/jobs.ts";
import { runScenario } from "../bench/run.ts";
import type { BenchContext } from "../bench/scenario.ts";
import { defaultLocalQueueSize, loadConfig } from "../src/config.ts";
import { testLogger, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

// The jobs figures are only meaningful if each side ran every job, in the configuration the
// scenario names.
describe("the jobs bench scenarios", () => {
  it("lists jobs_fast beside jobs", () => {
    const names = SCENARIOS.map((scenario) => scenario.name);
    expect(names.slice(0, 2)).toEqual(["jobs", "jobs_fast"]);
  });

  it(
    "jobs_fast runs every job, half of them in named queues, steward's default against graphile-worker's fastest",
    { timeout: 120_000 },
    async () => {
      const bench: BenchContext = { url: context.db.url, pool: context.db.pool, quick: true, logger: testLogger() };
      const result = await runScenario(jobsFastScenario, bench, 1);
      const defaults = loadConfig({});
      expect(result.detail).toEqual({
        ours: expect.objectContaining({
          jobs: 8000,
          queues: 1000,
          concurrency: defaults.concurrency,
          localQueueSize: defaultLocalQueueSize(defaults.concurrency),
          completeBatchDelayMs: 0,
        }),
        baseline: expect.objectContaining({ jobs: 8000, queues: 1000, ...fastestBaseline(defaults.concurrency) }),
      });
      expect(fastestBaseline(defaults.concurrency).localQueueSize).toBeGreaterThan(defaults.concurrency);
      expect(result.ours).toBeGreaterThan(0);
      expect(result.baseline).toBeGreaterThan(0);
      // Nothing left behind: each round waits for its table to empty, and teardown drops the baseline.
      const { rows } = await context.db.pool.query(
        "select (select count(*)::int from graphile_worker.jobs) as jobs, to_regnamespace('graphile_worker_baseline') as baseline",
      );
      expect(rows[0]).toEqual({ jobs: 0, baseline: null });
    },
  );
});
