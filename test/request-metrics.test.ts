import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PermanentError } from "../src/errors.ts";
import { rollupRequests } from "../tasks/rollup_requests.ts";
import {
  asRole,
  createTestRole,
  eventually,
  functionAccess,
  startTestWorker,
  useTestDatabase,
  withSettings,
} from "./helpers.ts";

const context = useTestDatabase();
let client: Awaited<ReturnType<typeof createTestRole>>;
let defaults: Array<{ name: string; value: string }>;

interface RequestRow {
  at?: string;
  endpoint: string;
  method: string;
  status: number;
  duration_ms: number;
  cache_hit?: boolean;
  request_id?: string;
}

async function record(rows: unknown): Promise<number> {
  const { rows: result } = await context.db.pool.query<{ count: number }>(
    "select steward.record_requests($1) as count",
    [JSON.stringify(rows)],
  );
  return result[0]!.count;
}

/** Runs the rollup step until it reports nothing more to do; returns the steps' results. */
async function rollup(maxBuckets = 5000) {
  const steps: Array<{ buckets_5m: number; buckets_hourly: number; more: boolean }> = [];
  do {
    const { rows } = await context.db.pool.query("select * from steward.rollup_requests($1)", [maxBuckets]);
    steps.push(rows[0]);
  } while (steps.at(-1)!.more && steps.length < 1000);
  return steps;
}

async function setSetting(name: string, value: string) {
  await context.db.pool.query("update steward.settings set value = $2 where name = $1", [name, value]);
}

/** The stats table's rows, and what percentile_cont over the raw rows says they should be. */
async function statsAndExpected(table: "request_stats_5m" | "request_stats_hourly") {
  const width = table === "request_stats_5m" ? "5 minutes" : "1 hour";
  const { rows: actual } = await context.db.pool.query(`
    select bucket, endpoint, method, requests::int, errors::int, p50_ms, p95_ms, p99_ms, cache_hits::int,
           rate_limited::int
      from steward.${table} order by bucket, endpoint, method`);
  const { rows: expected } = await context.db.pool.query(
    `select date_bin($1::interval, at, timestamptz '2000-01-01 00:00:00+00') as bucket, endpoint, method,
            count(*)::int as requests, (count(*) filter (where status >= 500))::int as errors,
            percentile_cont(0.5) within group (order by duration_ms) as p50_ms,
            percentile_cont(0.95) within group (order by duration_ms) as p95_ms,
            percentile_cont(0.99) within group (order by duration_ms) as p99_ms,
            (count(*) filter (where cache_hit))::int as cache_hits,
            (count(*) filter (where status = 429))::int as rate_limited
       from steward.requests group by 1, 2, 3 order by 1, 2, 3`,
    [width],
  );
  return { actual, expected };
}

/** A deterministic spread of requests over the closed hours before the current one. */
function spread(count: number, hoursBack: number, endpoints = ["/users/:id", "/orders", "/search"]): RequestRow[] {
  const hourStart = Math.floor(Date.now() / 3_600_000) * 3_600_000;
  return Array.from({ length: count }, (_, i) => ({
    at: new Date(hourStart - hoursBack * 3_600_000 + ((i * 7_919_000) % (hoursBack * 3_600_000))).toISOString(),
    endpoint: endpoints[i % endpoints.length]!,
    method: i % 4 === 0 ? "POST" : "GET",
    status: i % 23 === 0 ? 503 : i % 11 === 0 ? 404 : i % 13 === 0 ? 429 : 200,
    duration_ms: ((i * 37) % 997) / 3 + (i % 5),
    cache_hit: i % 3 === 0,
    request_id: `req-${i}`,
  }));
}

beforeAll(async () => {
  ({ rows: defaults } = await context.db.pool.query(
    "select name, value from steward.settings where name like 'request_metrics.%'",
  ));
  client = await createTestRole(context.db, "metrics_client");
  await context.db.pool.query(`grant steward_client to ${client.name}`);
});

beforeEach(async () => {
  await context.db.pool.query(`
    truncate steward.requests, steward.request_stats_5m, steward.request_stats_hourly, steward.request_stats_5m_overall,
             steward.request_rollup_pending, steward.request_rollup_dirty_hours`);
  for (const { name, value } of defaults) await setSetting(name, value);
});

afterAll(async () => {
  await client?.drop();
});

describe("steward.record_requests", () => {
  it("records a batch, defaulting at to now, cache_hit to false and upper-casing the method", async () => {
    expect(
      await record([
        { endpoint: "/a", method: "get", status: 200, duration_ms: 12.5 },
        {
          at: "2020-01-01T00:00:00Z".replace("2020-01-01", new Date().toISOString().slice(0, 10)),
          endpoint: "/b",
          method: "POST",
          status: 201,
          duration_ms: 0,
          cache_hit: true,
          request_id: "r1",
        },
      ]),
    ).toBe(2);
    const { rows } = await context.db.pool.query(
      "select endpoint, method, status, duration_ms, cache_hit, request_id, now() - at < interval '1 minute' as recent from steward.requests order by endpoint",
    );
    expect(rows[0]).toEqual({
      endpoint: "/a",
      method: "GET",
      status: 200,
      duration_ms: 12.5,
      cache_hit: false,
      request_id: null,
      recent: true,
    });
    expect(rows[1]).toMatchObject({ endpoint: "/b", method: "POST", cache_hit: true, request_id: "r1" });
    expect(await record([])).toBe(0);
  });

  const good = { endpoint: "/a", method: "GET", status: 200, duration_ms: 1 };
  const soon = (minutes: number) => new Date(Date.now() + minutes * 60_000).toISOString();
  it.each([
    ["rows that are not an array", good, /rows must be a JSON array of objects, got object/],
    ["a row that is not an object", [good, "GET /a"], /rows\[1\] must be a JSON object, got "GET \/a"/],
    ["an unknown field", [good, { ...good, user: 7 }], /rows\[1\]\.user is not a field \(the fields are at, endpoint/],
    [
      "no endpoint",
      [{ method: "GET", status: 200, duration_ms: 1 }],
      /rows\[0\]\.endpoint must be a string of 1 to 300 characters.*got nothing/,
    ],
    ["an empty endpoint", [{ ...good, endpoint: "" }], /rows\[0\]\.endpoint must be a string/],
    ["a method that is not one", [{ ...good, method: "GET /a" }], /rows\[0\]\.method must be an HTTP method/],
    [
      "a status as text",
      [good, good, { ...good, status: "200" }],
      /rows\[2\]\.status must be an integer from 100 to 599, got "200"/,
    ],
    [
      "a status out of range",
      [{ ...good, status: 600 }],
      /rows\[0\]\.status must be an integer from 100 to 599, got 600/,
    ],
    ["a fractional status", [{ ...good, status: 200.5 }], /rows\[0\]\.status must be an integer/],
    [
      "a negative duration",
      [{ ...good, duration_ms: -1 }],
      /rows\[0\]\.duration_ms must be a number of milliseconds, 0 or more, got -1/,
    ],
    ["a duration as text", [{ ...good, duration_ms: "5ms" }], /rows\[0\]\.duration_ms must be a number/],
    ["a cache_hit as text", [{ ...good, cache_hit: "yes" }], /rows\[0\]\.cache_hit must be true, false or absent/],
    ["a request_id as a number", [{ ...good, request_id: 5 }], /rows\[0\]\.request_id must be a string/],
    [
      "an at that is not a timestamp",
      [{ ...good, at: "yesterday" }],
      /rows\[0\]\.at must be an ISO 8601 timestamp with a time zone/,
    ],
    [
      "an at without a time zone",
      [{ ...good, at: "2024-05-01T10:00:00" }],
      /rows\[0\]\.at must be an ISO 8601 timestamp with a time zone/,
    ],
    [
      "an at older than the retention",
      [{ ...good, at: "2020-01-01T00:00:00Z" }],
      /rows\[0\]\.at must be within request_metrics\.raw_retention \(7 days\)/,
    ],
    [
      "an at in the future",
      [{ ...good, at: soon(60) }],
      /rows\[0\]\.at must not be later than now plus request_metrics\.max_clock_skew/,
    ],
  ])("refuses %s, naming the row and field, and writes nothing", async (_, rows, message) => {
    await expect(record(rows)).rejects.toMatchObject({ code: "22023", message: expect.stringMatching(message) });
    const { rows: counts } = await context.db.pool.query(
      "select (select count(*) from steward.requests)::int as raw, (select count(*) from steward.request_rollup_pending)::int as pending",
    );
    expect(counts[0]).toEqual({ raw: 0, pending: 0 });
  });

  it("refuses more than 10,000 rows", async () => {
    await expect(record(Array.from({ length: 10_001 }, () => good))).rejects.toMatchObject({
      code: "22023",
      message: expect.stringContaining("at most 10000 rows"),
    });
  });

  it("creates a missing day's partition on demand, once, for many callers at the same moment", async () => {
    const day = new Date(Date.now() - 4 * 86_400_000);
    const name = `requests_${day.toISOString().slice(0, 10).replaceAll("-", "")}`;
    await context.db.pool.query(`drop table if exists steward.${name}`);
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => record([{ ...good, at: new Date(day.getTime() + i * 1000).toISOString() }])),
    );
    expect(results).toEqual(Array(8).fill(1));
    const { rows } = await context.db.pool.query(
      `select (select count(*) from steward.${name})::int as rows,
              (select count(*) from pg_inherits where inhparent = 'steward.requests'::regclass and inhrelid = 'steward.${name}'::regclass)::int as partitions,
              obj_description('steward.${name}'::regclass, 'pg_class') as comment`,
    );
    expect(rows[0]).toMatchObject({
      rows: 8,
      partitions: 1,
      comment: expect.stringContaining("a partition of steward.requests"),
    });
  });

  it("is the one metrics function steward_client may run: it records, but cannot read or roll up", async () => {
    expect(await functionAccess(context.db.pool, "steward.record_requests(jsonb)")).toEqual({
      client: true,
      public: false,
      definer: true,
    });
    for (const internal of [
      "steward.rollup_requests(integer)",
      "steward.requeue_request_rollup(timestamptz, timestamptz)",
      "steward.create_request_partitions(date, date)",
      "steward.cleanup_requests(integer)",
      "steward.cleanup_request_stats(integer)",
      "steward.request_stats_of(interval, timestamptz[], text[], text[])",
    ]) {
      expect(await functionAccess(context.db.pool, internal), internal).toEqual({
        client: false,
        public: false,
        definer: false,
      });
    }
    const recorded = await asRole(
      context.db,
      client.name,
      async (db) =>
        (await db.query("select steward.record_requests($1) as count", [JSON.stringify([good])])).rows[0].count,
      { commit: true },
    );
    expect(recorded).toBe(1);
    for (const statement of [
      "select * from steward.requests",
      "select * from steward.request_stats_5m",
      "select steward.rollup_requests()",
    ]) {
      await expect(
        asRole(context.db, client.name, (db) => db.query(statement)),
        statement,
      ).rejects.toMatchObject({ code: "42501" });
    }
  });
});

describe("the request rollup", () => {
  it("fills 5-minute and hourly stats that equal percentile_cont over the raw rows", async () => {
    expect(await record(spread(1500, 3))).toBe(1500);
    await rollup();
    for (const table of ["request_stats_5m", "request_stats_hourly"] as const) {
      const { actual, expected } = await statsAndExpected(table);
      expect(actual.length, table).toBeGreaterThan(table === "request_stats_5m" ? 100 : 10);
      expect(actual, table).toEqual(expected);
    }
    const { rows } = await context.db.pool.query(
      "select sum(requests)::int as requests, sum(errors)::int as errors, sum(cache_hits)::int as hits from steward.request_stats_hourly",
    );
    expect(rows[0]).toEqual({ requests: 1500, errors: 66, hits: 500 });
  });

  it("is idempotent: a second run changes nothing, and recomputing every bucket gives the same rows", async () => {
    await record(spread(600, 2));
    await rollup();
    const before = await statsAndExpected("request_stats_5m");
    const beforeHourly = await statsAndExpected("request_stats_hourly");
    expect((await rollup())[0]).toEqual({ buckets_5m: 0, buckets_hourly: 0, more: false });
    const { rows } = await context.db.pool.query(
      "select steward.requeue_request_rollup(now() - interval '1 day') as queued",
    );
    expect(Number(rows[0].queued)).toBe(before.actual.length);
    const steps = await rollup();
    expect(steps[0]!.buckets_5m).toBe(before.actual.length);
    expect(await statsAndExpected("request_stats_5m")).toEqual(before);
    expect(await statsAndExpected("request_stats_hourly")).toEqual(beforeHourly);
    const { rows: audit } = await context.db.pool.query(
      "select detail ->> 'buckets' as buckets from steward.audit_log where action = 'requeue_request_rollup'",
    );
    expect(audit).toEqual([{ buckets: String(before.actual.length) }]);
  });

  it("catches up after downtime in bounded steps, run by the worker", async () => {
    await record(spread(900, 5));
    const { rows: pending } = await context.db.pool.query(
      "select count(distinct (bucket, endpoint, method))::int as buckets from steward.request_rollup_pending",
    );
    expect(pending[0].buckets).toBeGreaterThan(100);
    const { rows: first } = await context.db.pool.query("select * from steward.rollup_requests(7)");
    expect(first[0]).toMatchObject({ buckets_5m: 7, more: true });

    const worker = await startTestWorker(context.db, { tasks: [rollupRequests] });
    try {
      const { rows: job } = await context.db.pool.query(
        "select id from graphile_worker.add_job('rollup_requests', '{\"max_buckets\": 7}'::json)",
      );
      await eventually(
        async () =>
          (await context.db.pool.query("select 1 from graphile_worker.jobs where id = $1", [job[0].id])).rowCount === 0,
        { what: "the rollup job to finish", timeoutMs: 30_000 },
      );
    } finally {
      await worker.stop();
    }
    for (const table of ["request_stats_5m", "request_stats_hourly"] as const) {
      const { actual, expected } = await statsAndExpected(table);
      expect(actual, table).toEqual(expected);
    }
    const { rows: left } = await context.db.pool.query(
      "select (select count(*) from steward.request_rollup_pending)::int as pending, (select count(*) from steward.request_rollup_dirty_hours)::int as hours",
    );
    expect(left[0]).toEqual({ pending: 0, hours: 0 });
  });

  it("recomputes an old bucket and its hour when late rows arrive", async () => {
    await record(spread(300, 3));
    await rollup();
    const late = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000 - 2 * 3_600_000 + 60_000).toISOString();
    await record([
      { at: late, endpoint: "/users/:id", method: "GET", status: 500, duration_ms: 5000 },
      { at: late, endpoint: "/late-only", method: "GET", status: 200, duration_ms: 1 },
    ]);
    const steps = await rollup();
    expect(steps[0]).toMatchObject({ buckets_5m: 2, buckets_hourly: 2 });
    for (const table of ["request_stats_5m", "request_stats_hourly"] as const) {
      const { actual, expected } = await statsAndExpected(table);
      expect(actual, table).toEqual(expected);
    }
  });

  it("refreshes an hour still in progress at most every hourly_refresh, and a closed hour at once", async () => {
    // A clock skew allowance lets the test place a row in an hour that cannot close during it.
    await setSetting("request_metrics.max_clock_skew", "2 hours");
    const ahead = new Date(Date.now() + 61 * 60_000).toISOString();
    await record([
      { at: ahead, endpoint: "/open", method: "GET", status: 200, duration_ms: 3 },
      { at: spread(1, 2)[0]!.at, endpoint: "/closed", method: "GET", status: 200, duration_ms: 3 },
    ]);
    expect((await rollup())[0]).toMatchObject({ buckets_5m: 2, buckets_hourly: 1 });
    const hourly = async () =>
      (await context.db.pool.query("select endpoint from steward.request_stats_hourly order by endpoint")).rows.map(
        (row) => row.endpoint,
      );
    expect(await hourly()).toEqual(["/closed"]);
    await setSetting("request_metrics.hourly_refresh", "0 seconds");
    expect((await rollup())[0]).toMatchObject({ buckets_5m: 0, buckets_hourly: 1 });
    expect(await hourly()).toEqual(["/closed", "/open"]);
  });

  it("takes rows of a transaction that commits after a rollup on the next run, and says more only when a step was full", async () => {
    const writer = await context.db.pool.connect();
    try {
      await writer.query("begin");
      await writer.query("select steward.record_requests($1)", [JSON.stringify(spread(30, 1, ["/slow-commit"]))]);
      // The rollup cannot see those rows yet; it has nothing to do and says so.
      expect(await rollup(2)).toEqual([{ buckets_5m: 0, buckets_hourly: 0, more: false }]);
      await writer.query("commit");
    } finally {
      writer.release();
    }
    const steps = await rollup(2);
    expect(steps[0]).toMatchObject({ buckets_5m: 2, more: true });
    expect(steps.at(-1)!.more).toBe(false);
    expect(steps.reduce((sum, step) => sum + step.buckets_5m, 0)).toBeGreaterThan(2);
    const { actual, expected } = await statsAndExpected("request_stats_5m");
    expect(actual).toEqual(expected);
  });

  it("loses no row recorded while rollups run at the same time", async () => {
    await setSetting("request_metrics.hourly_refresh", "0 seconds");
    let recording = true;
    const rollups = (async () => {
      let runs = 0;
      while (recording || runs === 0) {
        await context.db.pool.query("select * from steward.rollup_requests(50)");
        runs++;
      }
      return runs;
    })();
    await Promise.all(
      Array.from({ length: 12 }, async (_, caller) => {
        for (let batch = 0; batch < 8; batch++) {
          await record(
            Array.from({ length: 15 }, (_, i) => ({
              endpoint: `/concurrent/${(caller + i) % 3}`,
              method: "GET",
              status: 200 + ((batch * i) % 2) * 300,
              duration_ms: caller * 10 + batch + i / 10,
            })),
          );
        }
      }),
    );
    recording = false;
    expect(await rollups).toBeGreaterThan(0);
    await rollup();
    for (const table of ["request_stats_5m", "request_stats_hourly"] as const) {
      const { actual, expected } = await statsAndExpected(table);
      expect(actual, table).toEqual(expected);
    }
    const { rows } = await context.db.pool.query("select sum(requests)::int as requests from steward.request_stats_5m");
    expect(rows[0].requests).toBe(12 * 8 * 15);
  });

  it("reports the buckets waiting for it on /metrics", async () => {
    await record(spread(40, 1, ["/m"]));
    const pending = async () =>
      (
        await context.db.pool.query(
          "select value from steward.metrics() where metric = 'steward_request_rollup_pending'",
        )
      ).rows[0].value;
    const { rows } = await context.db.pool.query(
      "select count(distinct (bucket, endpoint, method))::int as buckets from steward.request_rollup_pending",
    );
    expect(rows[0].buckets).toBeGreaterThan(1);
    expect(await pending()).toBe(rows[0].buckets);
    await rollup();
    expect(await pending()).toBe(0);
  });

  it("refuses a bad payload as a permanent error", () => {
    expect(rollupRequests.parse({})).toEqual({ maxBuckets: 5000 });
    expect(rollupRequests.parse({ max_buckets: 10 })).toEqual({ maxBuckets: 10 });
    expect(() => rollupRequests.parse({ max_buckets: 0 })).toThrow(PermanentError);
    expect(() => rollupRequests.parse({ buckets: 10 })).toThrow(/unknown payload field "buckets"/);
  });
});

describe("requests on /metrics", () => {
  /**
   * The bucket steward.request_metrics() describes now: the last 5-minute bucket that ended at
   * least a minute ago. Waits out the last seconds before it changes, so a test reads the bucket
   * it wrote.
   */
  async function reportedBucket(): Promise<Date> {
    const { rows } = await context.db.pool.query(`
      select date_bin('5 minutes', now() - interval '1 minute', timestamptz '2000-01-01 00:00:00+00') - interval '5 minutes' as bucket,
             (extract(epoch from date_bin('5 minutes', now() - interval '1 minute', timestamptz '2000-01-01 00:00:00+00')
                                 + interval '6 minutes' - now()) * 1000)::float8 as ms_left`);
    if (rows[0].ms_left > 15_000) return rows[0].bucket;
    await new Promise((resolve) => setTimeout(resolve, rows[0].ms_left + 100));
    return reportedBucket();
  }

  async function series(prefix: string) {
    const { rows } = await context.db.pool.query<{ metric: string; labels: Record<string, string>; value: number }>(
      "select metric, labels, value from steward.metrics() where metric like $1 order by metric, labels::text",
      [`${prefix}%`],
    );
    return rows;
  }

  const at = (bucket: Date, seconds: number) => new Date(bucket.getTime() + seconds * 1000).toISOString();

  it("reports requests, 5xx, 429s and exact percentiles per endpoint, and over all endpoints, of the last complete bucket", async () => {
    const bucket = await reportedBucket();
    const rows: RequestRow[] = [];
    for (let i = 1; i <= 100; i++) {
      rows.push({
        at: at(bucket, i),
        endpoint: "/a",
        method: "GET",
        status: i <= 2 ? 503 : i <= 8 ? 429 : 200,
        duration_ms: i,
      });
    }
    for (let i = 0; i < 10; i++) {
      rows.push({
        at: at(bucket, 200 + i),
        endpoint: "/b",
        method: "POST",
        status: i === 0 ? 500 : 201,
        duration_ms: 1000 + 100 * i,
      });
    }
    // The bucket before and the one after are not reported.
    rows.push({ at: at(bucket, -10), endpoint: "/a", method: "GET", status: 500, duration_ms: 9999 });
    rows.push({ at: at(bucket, 310), endpoint: "/a", method: "GET", status: 500, duration_ms: 9999 });
    await record(rows);
    await rollup();

    const { rows: expected } = await context.db.pool.query(
      `select percentile_cont(array[0.5, 0.95, 0.99]) within group (order by duration_ms) as all_p,
              percentile_cont(array[0.5, 0.95, 0.99]) within group (order by duration_ms) filter (where endpoint = '/a') as a_p
         from steward.requests where at >= $1 and at < $1::timestamptz + interval '5 minutes'`,
      [bucket],
    );
    const [allP, aP] = [expected[0].all_p as number[], expected[0].a_p as number[]];
    const a = { endpoint: "/a", method: "GET" };
    const b = { endpoint: "/b", method: "POST" };
    expect(await series("steward_requests_5m")).toEqual([
      { metric: "steward_requests_5m", labels: a, value: 100 },
      { metric: "steward_requests_5m", labels: b, value: 10 },
      ...[
        ["0.5", aP[0]],
        ["0.95", aP[1]],
        ["0.99", aP[2]],
      ].map(([quantile, ms]) => ({
        metric: "steward_requests_5m_duration_seconds",
        labels: { ...a, quantile },
        value: expect.closeTo((ms as number) / 1000, 9),
      })),
      ...["0.5", "0.95", "0.99"].map((quantile) => ({
        metric: "steward_requests_5m_duration_seconds",
        labels: { ...b, quantile },
        value: expect.any(Number),
      })),
      { metric: "steward_requests_5m_errors", labels: a, value: 2 },
      { metric: "steward_requests_5m_errors", labels: b, value: 1 },
      ...allP.map((ms, i) => ({
        metric: "steward_requests_5m_overall_duration_seconds",
        labels: { quantile: ["0.5", "0.95", "0.99"][i] },
        value: expect.closeTo(ms / 1000, 9),
      })),
      { metric: "steward_requests_5m_rate_limited", labels: a, value: 6 },
      { metric: "steward_requests_5m_rate_limited", labels: b, value: 0 },
      { metric: "steward_requests_5m_start_timestamp_seconds", labels: {}, value: bucket.getTime() / 1000 },
    ]);
    // The exact p95 of all 110 requests is not any endpoint's: it has a series of its own.
    expect(allP[1]).not.toBe(aP[1]);
  });

  it("keeps the busiest endpoints and sums the rest under _other, with the largest of their percentiles", async () => {
    const bucket = await reportedBucket();
    const rows: RequestRow[] = [];
    // /e1 has 50 requests ... /e5 has 10; /e5 is the slowest.
    for (let e = 1; e <= 5; e++) {
      for (let i = 0; i < 60 - 10 * e; i++) {
        rows.push({
          at: at(bucket, i),
          endpoint: `/e${e}`,
          method: "GET",
          status: i === 0 ? 500 : 200,
          duration_ms: e === 5 ? 5000 : 10,
        });
      }
    }
    await record(rows);
    await rollup();
    await withSettings(context.db.pool, { "metrics.max_label_values": "3" }, async () => {
      const requests = (await series("steward_requests_5m")).filter((row) => row.metric === "steward_requests_5m");
      expect(requests.map((row) => [row.labels.endpoint, row.value])).toEqual([
        ["/e1", 50],
        ["/e2", 40],
        ["_other", 30 + 20 + 10],
      ]);
      const errors = (await series("steward_requests_5m_errors")).map((row) => [row.labels.endpoint, row.value]);
      expect(errors).toEqual([
        ["/e1", 1],
        ["/e2", 1],
        ["_other", 3],
      ]);
      const p95 = (await series("steward_requests_5m_duration_seconds")).filter(
        (row) => row.labels.quantile === "0.95" && row.labels.endpoint === "_other",
      );
      expect(p95).toEqual([expect.objectContaining({ value: 5 })]);
    });
  });
});

describe("request metrics cleanup", () => {
  const dayName = (daysAgo: number) =>
    `requests_${new Date(Date.now() - daysAgo * 86_400_000).toISOString().slice(0, 10).replaceAll("-", "")}`;

  it("drops whole days past the raw retention once they are rolled up, and keeps the rest", async () => {
    const { pool } = context.db;
    await setSetting("request_metrics.raw_retention", "2 days");
    await pool.query(`
      select steward.create_request_partitions(((now() - interval '6 days') at time zone 'UTC')::date,
                                               ((now() - interval '5 days') at time zone 'UTC')::date);
      insert into steward.requests (at, endpoint, method, status, duration_ms, cache_hit)
      select now() - d * interval '1 day', '/old', 'GET', 200, 1, false from generate_series(5, 6) d, generate_series(1, 10);
      insert into steward.request_rollup_pending
      select date_bin('5 minutes', now() - interval '5 days', timestamptz '2000-01-01 00:00:00+00'), '/old', 'GET';`);
    await record([{ endpoint: "/new", method: "GET", status: 200, duration_ms: 1 }]);
    const partitions = async () =>
      (
        await pool.query(
          "select inhrelid::regclass::text as name from pg_inherits where inhparent = 'steward.requests'::regclass",
        )
      ).rows.map((row) => row.name);

    // The step reports the rows a dropped day held as the planner estimates them: analyzed, exactly.
    await pool.query(`analyze steward.${dayName(6)}`);
    const { rows: first } = await pool.query("select steward.cleanup_requests(1000) as dropped");
    expect(await partitions()).not.toContain(`steward.${dayName(6)}`);
    expect(await partitions()).toContain(`steward.${dayName(5)}`);
    expect(Number(first[0].dropped)).toBe(10);

    await rollup();
    await pool.query("select steward.cleanup_requests(1000)");
    expect(await partitions()).not.toContain(`steward.${dayName(5)}`);
    expect(await partitions()).toContain(`steward.${dayName(0)}`);
    const { rows } = await pool.query("select endpoint from steward.requests");
    expect(rows).toEqual([{ endpoint: "/new" }]);
  });

  it("deletes stats past their retention in batches", async () => {
    const { pool } = context.db;
    await pool.query(`
      insert into steward.request_stats_5m
      select now() - interval '31 days' - g * interval '5 minutes', '/x', 'GET', 1, 0, 1, 1, 1, 0 from generate_series(1, 5) g;
      insert into steward.request_stats_5m values (now(), '/x', 'GET', 1, 0, 1, 1, 1, 0);
      insert into steward.request_stats_hourly
      select now() - interval '401 days' - g * interval '1 hour', '/x', 'GET', 1, 0, 1, 1, 1, 0 from generate_series(1, 2) g;
      insert into steward.request_stats_hourly values (now() - interval '399 days', '/x', 'GET', 1, 0, 1, 1, 1, 0);`);
    const deleted: number[] = [];
    for (let call = 0; call < 5; call++) {
      const { rows } = await pool.query("select steward.cleanup_request_stats(3) as deleted");
      deleted.push(Number(rows[0].deleted));
    }
    expect(deleted).toEqual([3, 3, 1, 0, 0]);
    const { rows } = await pool.query(
      "select (select count(*) from steward.request_stats_5m)::int as five, (select count(*) from steward.request_stats_hourly)::int as hourly",
    );
    expect(rows[0]).toEqual({ five: 1, hourly: 1 });
  });

  it("registers both steps with the cleanup task", async () => {
    const { rows } = await context.db.pool.query(
      "select name, function::text from steward.cleanup_steps where name in ('requests', 'request_stats') order by name",
    );
    expect(rows).toEqual([
      { name: "request_stats", function: "steward.cleanup_request_stats(integer)" },
      { name: "requests", function: "steward.cleanup_requests(integer)" },
    ]);
  });
});
