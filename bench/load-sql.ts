// The load test's SQL driver: a scratch database beside the given one, migrated, with a worker
// draining and refreshing in it, and simulated users calling the SPEC's client functions the
// way application code does (the TypeScript client where it has them, plain SQL elsewhere).
import { CircuitOpenError, Circuits } from "../src/client/circuits.ts";
import { page } from "../src/client/pagination.ts";
import { RateLimiter } from "../src/client/rate-limits.ts";
import type { Config } from "../src/config.ts";
import { createPool } from "../src/database.ts";
import type { Logger } from "../src/logger.ts";
import { startWorker } from "../src/worker/runner.ts";
import type { LoadDriver, LoadOperation } from "./load.ts";
import { scratchDatabase } from "./scratch.ts";

const PROFILES = "public.load_profiles";
const VIEW = "public.load_profile_stats";
const EVENTS = "public.load_events";
/** Profiles are paged by region: `page` with a filter, as a feed of one region would be. */
const REGIONS = 50;

/** A failure of the simulated dependency behind a circuit: expected, not an error of the run. */
class SimulatedFailure extends Error {}

function operations(pool: ReturnType<typeof createPool>, limiter: RateLimiter, circuits: Circuits): LoadOperation[] {
  /** Where each region's reader is in its feed: the next cursor, or none for the first page. */
  const cursors = new Map<number, string | null>();
  return [
    {
      name: "rate_limit_hit",
      weight: 40,
      // Through the TypeScript client, as application code calls it (coalesced per tick).
      run: (user) => limiter.hit("load", `user:${user}`),
    },
    {
      name: "lease",
      weight: 10,
      async run(user) {
        const key = `export:${user % 500}`;
        const { rows } = await pool.query<{ lease: string | null }>(
          "select steward.lease_acquire($1, 2, '30 seconds') as lease",
          [key],
        );
        if (rows[0]?.lease) await pool.query("select steward.lease_release($1)", [rows[0].lease]);
      },
    },
    {
      name: "enqueue_invalidation",
      weight: 15,
      run: (user) =>
        pool.query("select steward.enqueue_invalidation($1)", [user % 20 === 0 ? `mv:${VIEW}` : `user:${user}`]),
    },
    {
      name: "record_requests",
      weight: 10,
      run: (user) =>
        pool.query("select steward.record_requests($1::jsonb)", [
          JSON.stringify(
            Array.from({ length: 5 }, (_, i) => ({
              at: new Date().toISOString(),
              endpoint: ["/feed", "/profile", "/search", "/metrics"][(user + i) % 4],
              method: i % 3 === 0 ? "POST" : "GET",
              status: Math.random() < 0.01 ? 503 : 200,
              duration_ms: Math.round(5 + Math.random() * 120),
              cache_hit: Math.random() < 0.6,
              request_id: `${user}-${Date.now()}-${i}`,
            })),
          ),
        ]),
    },
    {
      name: "page",
      weight: 10,
      async run(user) {
        const region = user % REGIONS;
        const result = await page(pool, PROFILES, {
          orderBy: ["user_id"],
          filter: { region },
          max: 20,
          after: cursors.get(region) ?? null,
        });
        cursors.set(region, result.next);
      },
    },
    {
      name: "batch_insert",
      weight: 5,
      run: (user) =>
        pool.query("select steward.batch_insert($1::regclass, $2::jsonb)", [
          EVENTS,
          JSON.stringify(
            Array.from({ length: 10 }, (_, i) => ({ user_id: user, kind: i % 3 === 0 ? "click" : "view" })),
          ),
        ]),
    },
    {
      name: "circuit",
      weight: 10,
      async run(user) {
        // A call to a flaky dependency (2 % of calls fail) through its shared circuit breaker: a
        // refusal by an open circuit and the dependency's own failures are what a breaker is for.
        try {
          await circuits.withCircuit(`load:dependency:${user % 20}`, async () => {
            if (Math.random() < 0.02) throw new SimulatedFailure("the dependency failed");
          });
        } catch (error) {
          if (!(error instanceof SimulatedFailure || error instanceof CircuitOpenError)) throw error;
        }
      },
    },
  ];
}

async function prepare(url: string, users: number): Promise<void> {
  const pool = createPool(url, { max: 1 });
  try {
    await pool.query("select steward.set_rate_limit('load', 60, '1 minute')");
    await pool.query("select steward.set_rate_limit('load', 1000, '1 hour')");
    await pool.query(
      `create table ${PROFILES} (user_id int primary key, region int not null, visits int not null default 0)`,
    );
    await pool.query(`create index on ${PROFILES} (region, user_id)`);
    await pool.query(`insert into ${PROFILES} (user_id, region) select g, g % $2 from generate_series(0, $1 - 1) g`, [
      users,
      REGIONS,
    ]);
    await pool.query(
      `create table ${EVENTS} (id bigint generated always as identity primary key, user_id int not null,
                               kind text not null, at timestamptz not null default now())`,
    );
    await pool.query(
      `create materialized view ${VIEW} as select visits % 10 as bucket, count(*) as users from ${PROFILES} group by 1`,
    );
    await pool.query(`create unique index on ${VIEW} (bucket)`);
    await pool.query(`select steward.register_materialized_view('${VIEW}', debounce => '2 seconds')`);
  } finally {
    await pool.end();
  }
}

/**
 * Starts the SQL driver: a scratch database next to `url` (dropped by `stop`) prepared for
 * `users` simulated users, a worker in it, and a pool of `connections`.
 */
export async function startSqlDriver(options: {
  url: string;
  config: Config;
  logger: Logger;
  users: number;
  connections: number;
}): Promise<LoadDriver> {
  const scratch = await scratchDatabase(options.url, options.logger, "load");
  try {
    await prepare(scratch.url, options.users);
    const worker = await startWorker({
      url: scratch.url,
      config: { ...options.config, concurrency: 2 },
      logger: options.logger,
      health: false,
    });
    const pool = createPool(scratch.url, { max: options.connections, applicationName: "steward load" });
    return {
      operations: operations(pool, new RateLimiter(pool), new Circuits(pool)),
      async stop() {
        try {
          await pool.end();
          await worker.stop("load test over");
        } finally {
          await scratch.drop();
        }
      },
    };
  } catch (error) {
    await scratch.drop();
    throw error;
  }
}
