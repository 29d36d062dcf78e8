// The Recall example against real PostgreSQL: its checklist's schema objects, the HTTP service's
// limits (exact per-user windows, 5 at once released in every outcome), circuits and timeouts,
// the thread cache (hits, coalescing, invalidation through the queue and the notify sink), the
// request metrics, and removal leaving nothing behind.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeApis } from "../examples/recall/fake-apis.ts";
import { installRecall, removeRecall } from "../examples/recall/index.ts";
import { RecallService } from "../examples/recall/service.ts";
import { eventually, startTestWorker, testLogger, useTestDatabase, whileLocked } from "./helpers.ts";

const context = useTestDatabase();
let service: RecallService;
let base: string;
const apis = new FakeApis();
let userCounter = 0;
/** A fresh user per test: the per-user windows are exact and would carry over. */
const newUser = () => `user-${process.pid}-${++userCounter}`;

beforeAll(async () => {
  await installRecall(context.db.pool);
  await installRecall(context.db.pool); // idempotent
  service = new RecallService({
    pool: context.db.pool,
    url: context.db.url,
    logger: testLogger(),
    apis,
    flushEveryMs: 100,
    timeouts: { completion: 300 },
  });
  base = `http://127.0.0.1:${await service.listen(0)}`;
});

afterAll(async () => {
  await service?.stop();
});

async function call(user: string, method: string, path: string, body?: unknown) {
  const response = await fetch(base + path, {
    method,
    headers: { "x-user-id": user, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return {
    status: response.status,
    headers: response.headers,
    body: (await response.json()) as Record<string, unknown>,
  };
}

/**
 * Starts `requests` while another session holds recall.recall_threads locked, so every request
 * that reads a thread waits; releases the lock once `ready` holds, and returns their answers.
 */
async function whileStalled<T>(requests: () => Promise<T>, ready: () => boolean): Promise<T> {
  const { answers } = await whileLocked(
    context.db,
    "lock table recall.recall_threads in access exclusive mode",
    async () => {
      const answers = requests();
      answers.catch(() => undefined); // awaited once the lock is released
      await eventually(async () => ready(), { what: "the requests to be under way" });
      return { answers };
    },
  );
  return answers;
}

async function newThread(user: string): Promise<string> {
  const created = await call(user, "POST", "/threads", { title: "a thread" });
  expect(created.status).toBe(201);
  return created.body.id as string;
}

describe("the checklist's schema", () => {
  it("has the five named indexes, the partial one partial and the candidate one GIN", async () => {
    const { rows } = await context.db.pool.query<{ indexname: string; indexdef: string }>(
      "select indexname, indexdef from pg_indexes where schemaname = 'recall' and indexname like 'idx_%' order by 1",
    );
    expect(rows.map((r) => r.indexname)).toEqual([
      "idx_recall_messages_candidate_json",
      "idx_recall_messages_thread_created",
      "idx_recall_messages_type",
      "idx_recall_threads_active",
      "idx_recall_threads_user_last_message",
    ]);
    const def = (name: string) => rows.find((r) => r.indexname === name)!.indexdef;
    expect(def("idx_recall_messages_candidate_json")).toMatch(/USING gin \(candidate\)/);
    expect(def("idx_recall_threads_active")).toMatch(/WHERE \(\(deleted_at IS NULL\) AND \(archived_at IS NULL\)\)/);
    expect(def("idx_recall_messages_thread_created")).toMatch(/\(thread_id, created_at, id\)/);
  });

  it("pages a thread newest first with the checklist's call, and batch-inserts all or nothing", async () => {
    const client = await context.db.pool.connect();
    try {
      await client.query("set search_path = recall, public");
      const { rows: threads } = await client.query<{ id: string }>(
        "insert into recall_threads (user_id) values ('sql-user') returning id",
      );
      const thread = threads[0]!.id;
      const messages = Array.from({ length: 120 }, (_, i) => ({
        thread_id: thread,
        message_type: "user",
        content: `m${i}`,
        created_at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
      }));
      // Several calls on one connection: plpgsql goes generic-plan after 5.
      for (let i = 0; i < 6; i++) {
        const { rows } = await client.query("select insert_recall_messages_batch($1::jsonb) as n", [
          JSON.stringify(messages.slice(i * 20, i * 20 + 20)),
        ]);
        expect(rows[0].n).toBe(20);
      }
      const seen: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 10; pages++) {
        const result: { rows: { page: { rows: { content: string }[]; next: string | null } }[] } = await client.query(
          `select get_recall_messages_paginated($1::uuid, $2, 50) as page`,
          [thread, cursor],
        );
        seen.push(...result.rows[0]!.page.rows.map((r) => r.content));
        cursor = result.rows[0]!.page.next;
        if (!cursor) break;
      }
      expect(seen).toEqual(messages.map((m) => m.content).reverse());
      const { rows: last } = await client.query("select last_message_at from recall_threads where id = $1", [thread]);
      expect(new Date(last[0].last_message_at).toISOString()).toBe(messages.at(-1)!.created_at);
      // One bad row: nothing of the batch is stored.
      await expect(
        client.query("select insert_recall_messages_batch($1::jsonb)", [
          JSON.stringify([
            { thread_id: thread, message_type: "user", content: "ok" },
            { thread_id: thread, message_type: "shout" },
          ]),
        ]),
      ).rejects.toMatchObject({ code: "23514" });
      const { rows: count } = await client.query(
        "select count(*)::int as n from recall_messages where thread_id = $1",
        [thread],
      );
      expect(count[0].n).toBe(120);
      await expect(
        client.query("select get_recall_messages_paginated($1::uuid, null, 0)", [thread]),
      ).rejects.toMatchObject({ code: expect.stringMatching(/^22/) });
    } finally {
      client.release();
    }
  });
});

describe("limits", () => {
  it("answers the 11th request of a minute with 429, Retry-After and the RateLimit headers, however they are spread", async () => {
    const user = newUser();
    const thread = await newThread(user); // 1
    for (let i = 0; i < 4; i++) expect((await call(user, "GET", `/threads/${thread}/messages`)).status).toBe(200); // 2..5
    const parallel = await Promise.all(
      Array.from({ length: 5 }, () => call(user, "GET", `/threads/${thread}/messages?limit=10`)),
    ); // 6..10 at once: at most 5 at once is also what the lease allows
    expect(parallel.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    const eleventh = await call(user, "GET", `/threads/${thread}/messages`);
    expect(eleventh.status).toBe(429);
    const retryAfter = Number(eleventh.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(eleventh.headers.get("ratelimit-policy")).toBe('"recall/60s";q=10;w=60, "recall/3600s";q=100;w=3600');
    expect(eleventh.headers.get("ratelimit")).toMatch(/^"recall\/60s";r=0;t=\d+, "recall\/3600s";r=90;t=\d+$/);
    expect(eleventh.headers.get("ratelimit-remaining")).toBe("0");
    // Another user is not affected.
    expect((await call(newUser(), "POST", "/threads", {})).status).toBe(201);
  });

  it("lets at most 5 requests of a user run at once, and releases the lease whether the request succeeds or fails", async () => {
    const user = newUser();
    const thread = await newThread(user);
    apis.set("completion", { latencyMs: 150 });
    const refusedBefore = service.snapshot().leaseRefused;
    try {
      // Five hold their lease while the thread's table is locked: the sixth finds none left
      // however the machine schedules them.
      const six = await whileStalled(
        () =>
          Promise.all(
            Array.from({ length: 6 }, () => call(user, "POST", `/threads/${thread}/resolve`, { text: "what is this" })),
          ),
        () => service.snapshot().leaseRefused > refusedBefore,
      );
      expect(six.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 429]);
      const refused = six.find((r) => r.status === 429)!;
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(refused.body.error).toMatch(/at most 5 requests at once/);
    } finally {
      apis.set("completion", { latencyMs: 20 });
    }
    // Every lease is back: one that succeeded (above) and one that failed (a bad body, below).
    expect((await call(user, "POST", `/threads/${thread}/resolve`, {})).status).toBe(400);
    const { rows } = await context.db.pool.query(
      "select count(*)::int as held from steward.leases where key = $1 and expires_at > now()",
      [`recall:user:${user}`],
    );
    expect(rows[0].held).toBe(0);
  });
});

describe("external APIs through circuits", () => {
  it("stores both messages of a resolve, transcribes audio, and recognises a song", async () => {
    const user = newUser();
    const thread = await newThread(user);
    const chat = await call(user, "POST", `/threads/${thread}/resolve`, { text: "hello there" });
    expect(chat).toMatchObject({ status: 200, body: { intent: "chat" } });
    const song = await call(user, "POST", `/threads/${thread}/resolve`, { audio: "hum hum song" });
    expect(song).toMatchObject({ status: 200, body: { intent: "song" } });
    const page = await call(user, "GET", `/threads/${thread}/messages`);
    expect((page.body.rows as { message_type: string }[]).map((r) => r.message_type)).toEqual([
      "song",
      "transcript",
      "assistant",
      "user",
    ]);
  });

  it("times a slow completion out at its timeout (504), and opens the circuit after 5 failures (503 without calling)", async () => {
    apis.set("completion", { latencyMs: 2000 });
    try {
      const user = newUser();
      const thread = await newThread(user);
      const slow = await call(user, "POST", `/threads/${thread}/resolve`, { text: "slow" });
      expect(slow.status).toBe(504);
      expect(slow.body.error).toMatch(/timed out after 300 ms/);
    } finally {
      apis.set("completion", { latencyMs: 20 });
    }
    apis.set("intent", { failureRate: 1 });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 7; i++) {
        const user = newUser();
        const thread = await newThread(user);
        statuses.push((await call(user, "POST", `/threads/${thread}/resolve`, { text: "fail" })).status);
      }
      expect(statuses).toEqual([502, 502, 502, 502, 502, 503, 503]);
      const { rows } = await context.db.pool.query("select steward.circuit_state('recall:intent') as state");
      expect(rows[0].state).toBe("open");
    } finally {
      apis.set("intent", { failureRate: 0 });
      await context.db.pool.query("select steward.circuit_reset('recall:intent')");
    }
  });
});

describe("the thread cache", () => {
  it("serves repeated reads from the cache and coalesces identical reads in flight into one query", async () => {
    const user = newUser();
    const thread = await newThread(user);
    const before = service.snapshot().cache;
    // The thread's table stays locked until all five reads are under way, so the four after the
    // first find its read in flight however the machine schedules them.
    const reads = await whileStalled(
      () => Promise.all(Array.from({ length: 5 }, () => call(user, "GET", `/threads/${thread}/messages`))),
      () => service.snapshot().cache.coalesced - before.coalesced >= 4,
    );
    expect(reads.every((r) => r.status === 200)).toBe(true);
    const again = await call(user, "GET", `/threads/${thread}/messages`);
    expect(again.status).toBe(200);
    const after = service.snapshot().cache;
    // Per request two reads (the thread, the page): the first of each is a miss, every other a hit.
    expect(after.misses - before.misses).toBe(2);
    expect(after.hits - before.hits).toBe(10);
    expect(after.coalesced - before.coalesced).toBeGreaterThan(0);
  });

  it("drops a thread when its tag arrives through the invalidation queue and the notify sink", async () => {
    const user = newUser();
    const thread = await newThread(user);
    expect((await call(user, "GET", `/threads/${thread}/messages`)).body.rows).toEqual([]);
    // A write this service did not make: only the channel can tell it.
    await context.db.pool.query(
      "select recall.insert_recall_messages_batch(jsonb_build_array(jsonb_build_object('thread_id', $1::uuid, 'message_type', 'user', 'content', 'from elsewhere')))",
      [thread],
    );
    expect((await call(user, "GET", `/threads/${thread}/messages`)).body.rows).toEqual([]); // still cached
    const dropped = service.snapshot().cache.invalidations;
    const worker = await startTestWorker(context.db, { config: { sinks: ["notify"] } });
    try {
      // Polled without requests: each request counts against the user's 10 a minute.
      await eventually(async () => service.snapshot().cache.invalidations > dropped, {
        what: "the tag to arrive on the channel",
        timeoutMs: 15_000,
      });
    } finally {
      await worker.stop();
    }
    const page = await call(user, "GET", `/threads/${thread}/messages`);
    expect((page.body.rows as { content: string }[]).map((r) => r.content)).toEqual(["from elsewhere"]);
  });

  it("shows its hit rate and per-operation timings on /metrics, and records requests through steward.record_requests", async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/^recall_cache_hit_ratio 0\.\d{4}$/m);
    for (const stat of ["avg", "min", "max", "p50", "p95", "p99"]) {
      expect(text).toMatch(
        new RegExp(`^recall_request_duration_ms\\{operation="list_messages",stat="${stat}"\\} \\d`, "m"),
      );
    }
    await eventually(
      async () => {
        const { rows } = await context.db.pool.query(
          "select count(*)::int as n, count(*) filter (where cache_hit)::int as hits from steward.requests where endpoint = '/threads/:id/messages'",
        );
        return rows[0].n > 10 && rows[0].hits > 0;
      },
      { what: "request rows in steward.requests" },
    );
  });
});

describe("removal", () => {
  it("leaves nothing of the example behind, and installs again", async () => {
    const { pool } = context.db;
    await service.stop();
    expect(await removeRecall(pool)).toBe(true);
    expect(await removeRecall(pool)).toBe(false);
    const { rows } = await pool.query(`
      select (select count(*) from pg_namespace where nspname = 'recall')::int as schemas,
             (select count(*) from steward.tracked_tables)::int as tracked,
             (select count(*) from steward.rate_limit_windows where policy = 'recall')::int as windows,
             (select count(*) from steward.circuits where name like 'recall:%')::int as circuits,
             (select count(*) from steward.circuit_states where name like 'recall:%')::int as states,
             (select count(*) from steward.invalidations where tag like 'recall:%')::int as invalidations`);
    expect(rows[0]).toEqual({ schemas: 0, tracked: 0, windows: 0, circuits: 0, states: 0, invalidations: 0 });
    await installRecall(pool);
    const { rows: again } = await pool.query("select count(*)::int as n from steward.tracked_tables");
    expect(again[0].n).toBe(2);
  });
});
