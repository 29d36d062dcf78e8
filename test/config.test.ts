import { describe, expect, it } from "vitest";
import { defaultLocalQueueSize, loadConfig } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";
import { cronItems, effectiveSchedules } from "../src/worker/schedules.ts";

describe("configuration", () => {
  it("names the variable and the accepted range of a bad integer", () => {
    expect(() => loadConfig({ STEWARD_HEALTH_PORT: "http" })).toThrow(
      new ConfigError('STEWARD_HEALTH_PORT must be an integer from 0 to 65535, got "http"'),
    );
  });

  it("refuses a DATABASE_URL that is not a postgres URL", () => {
    expect(() => loadConfig({ DATABASE_URL: "mysql://x" })).toThrow(ConfigError);
  });

  it("defaults the health port to 9187 and the data folder to .steward", () => {
    const config = loadConfig({});
    expect(config.healthPort).toBe(9187);
    expect(config.dataDir.endsWith(".steward")).toBe(true);
    expect(config.databaseUrl).toBeUndefined();
  });

  it("binds the health server to 127.0.0.1 unless STEWARD_HEALTH_HOST says otherwise", () => {
    expect(loadConfig({}).healthHost).toBe("127.0.0.1");
    expect(loadConfig({ STEWARD_HEALTH_HOST: "0.0.0.0" }).healthHost).toBe("0.0.0.0");
  });

  it("runs with a local queue sized from the concurrency and batched completions unless told otherwise", () => {
    expect(loadConfig({})).toMatchObject({
      concurrency: 8,
      localQueueSize: defaultLocalQueueSize(8),
      completeBatchDelayMs: 0,
    });
    expect(defaultLocalQueueSize(8)).toBe(64);
    expect(loadConfig({ STEWARD_CONCURRENCY: "1" }).localQueueSize).toBe(8);
    // Never below the concurrency, which would leave slots idle (graphile-worker warns of it).
    expect(loadConfig({ STEWARD_CONCURRENCY: "1000" }).localQueueSize).toBe(1000);
    expect(loadConfig({ STEWARD_LOCAL_QUEUE_SIZE: "8" }).localQueueSize).toBe(8);
    expect(loadConfig({ STEWARD_LOCAL_QUEUE_SIZE: "0" }).localQueueSize).toBe(0);
    expect(() => loadConfig({ STEWARD_LOCAL_QUEUE_SIZE: "-1" })).toThrow(
      new ConfigError('STEWARD_LOCAL_QUEUE_SIZE must be an integer from 0 to 10000, got "-1"'),
    );
  });
});

describe("the example steward start offers", () => {
  it("is health-metrics on the embedded database, none on a DATABASE_URL database unless named", () => {
    expect(loadConfig({}).example).toBe("health-metrics");
    expect(loadConfig({ STEWARD_EXAMPLE: "none" }).example).toBeUndefined();
    expect(loadConfig({ DATABASE_URL: "postgres://db/app" }).example).toBeUndefined();
    expect(loadConfig({ DATABASE_URL: "postgres://db/app", STEWARD_EXAMPLE: "health-metrics" }).example).toBe(
      "health-metrics",
    );
  });

  it("refuses an example it does not know, naming the variable", () => {
    expect(() => loadConfig({ STEWARD_EXAMPLE: "shop" })).toThrow(
      new ConfigError('STEWARD_EXAMPLE takes "health-metrics" or "none", got "shop"'),
    );
  });
});

describe("schedules", () => {
  const schedules = [
    { task: "cleanup", pattern: "17 * * * *", description: "hourly" },
    { task: "vacuum_tables", pattern: "0 3 * * 0", description: "weekly" },
  ];

  it("takes a pattern from STEWARD_CRON_<TASK> and turns a schedule off with 'off'", () => {
    const effective = effectiveSchedules(schedules, {
      STEWARD_CRON_CLEANUP: "*/5 * * * *",
      STEWARD_CRON_VACUUM_TABLES: "off",
    });
    expect(effective.map((s) => [s.task, s.pattern, s.enabled, s.source])).toEqual([
      ["cleanup", "*/5 * * * *", true, "environment"],
      ["vacuum_tables", "0 3 * * 0", false, "environment"],
    ]);
    expect(cronItems(effective)).toHaveLength(1);
  });

  it("names the variable holding a pattern that is not cron", () => {
    expect(() => cronItems(effectiveSchedules(schedules, { STEWARD_CRON_CLEANUP: "every hour" }))).toThrow(
      /STEWARD_CRON_CLEANUP: "every hour" is not a cron pattern/,
    );
  });
});
