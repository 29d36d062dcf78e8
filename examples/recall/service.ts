// The Recall service over plain node:http. Every request of a user passes, in order: the exact
// per-user rate limit (10 a minute, 100 an hour: 429 with Retry-After and the RateLimit
// headers), then one of 5 concurrency leases of that user (released however the request ends).
// Reads of a thread (the thread and its message pages) go through a cache that identical
// in-flight reads share, and that drops a thread when its tag recall:thread:<id> arrives on the
// invalidation channel (LISTEN), or at once when this process wrote to the thread. A resolve
// calls the simulated external APIs, each through its circuit with its own timeout.
import { randomUUID } from "node:crypto";
import http from "node:http";
import pg from "pg";
import { CircuitOpenError, CircuitTimeoutError, Circuits } from "../../src/client/circuits.ts";
import { Leases, LeaseUnavailableError } from "../../src/client/leases.ts";
import { RateLimiter } from "../../src/client/rate-limits.ts";
import type { Logger } from "../../src/logger.ts";
import { FakeApiError, FakeApis, type ApiName } from "./fake-apis.ts";

/** The checklist's per-call timeouts. */
export const TIMEOUTS_MS: Readonly<Record<"request" | ApiName, number>> = {
  request: 55_000,
  transcription: 10_000,
  intent: 10_000,
  completion: 30_000,
  music_recognition: 10_000,
};

const RATE_LIMIT_POLICY = "recall";
const MAX_CONCURRENT_PER_USER = 5;
/** Most cached threads; past it the least recently filled are dropped. */
const CACHE_MAX_THREADS = 10_000;
/** Most durations kept per operation for the percentiles (the most recent ones). */
const RESERVOIR = 10_000;

export interface RecallServiceOptions {
  pool: pg.Pool;
  /** Where LISTEN connects (a connection of its own); the pool's URL. */
  url: string;
  logger: Logger;
  apis?: FakeApis;
  /** The invalidation channel the worker's notify sink uses (STEWARD_NOTIFY_CHANNEL). */
  channel?: string;
  /** How often request rows go to steward.record_requests (default 1 s). */
  flushEveryMs?: number;
  timeouts?: Partial<typeof TIMEOUTS_MS>;
}

type Operation = "create_thread" | "resolve" | "list_messages" | "batch_insert";

/** An answer to send: status, JSON body, extra headers. */
class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
    /** Whether the answer came from the thread cache (steward.requests.cache_hit). */
    readonly cacheHit = false,
  ) {}
}

const fail = (status: number, error: string, headers?: Record<string, string>) => new Reply(status, { error }, headers);

/** Durations of one operation: a count, the extremes, and a reservoir of recent ones for percentiles. */
class Timings {
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;
  readonly recent: number[] = [];
  #next = 0;

  add(ms: number): void {
    this.count++;
    this.sum += ms;
    this.min = Math.min(this.min, ms);
    this.max = Math.max(this.max, ms);
    if (this.recent.length < RESERVOIR) this.recent.push(ms);
    else this.recent[this.#next++ % RESERVOIR] = ms;
  }

  summary() {
    const sorted = [...this.recent].sort((a, b) => a - b);
    const at = (q: number) =>
      sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]! : 0;
    return {
      count: this.count,
      avg: this.count ? this.sum / this.count : 0,
      min: this.count ? this.min : 0,
      max: this.max,
      p50: at(0.5),
      p95: at(0.95),
      p99: at(0.99),
    };
  }
}

interface ThreadRow {
  id: string;
  user_id: string;
  title: string;
  last_message_at: string | null;
}

interface MessagePage {
  rows: unknown[];
  next: string | null;
}

/**
 * Per thread: its row and its message pages. `generation` moves on each invalidation, so a read
 * that began before an invalidation does not store what it read.
 */
class ThreadCache {
  readonly #entries = new Map<string, Map<string, unknown>>();
  readonly #generations = new Map<string, number>();
  readonly #inFlight = new Map<string, Promise<unknown>>();
  hits = 0;
  misses = 0;
  coalesced = 0;
  invalidations = 0;

  /** The cached value of `key` of `thread`, or the shared result of one read of it. */
  async read<T>(thread: string, key: string, load: () => Promise<T>): Promise<{ value: T; hit: boolean }> {
    const entry = this.#entries.get(thread);
    if (entry?.has(key)) {
      this.hits++;
      return { value: entry.get(key) as T, hit: true };
    }
    const flightKey = `${thread}\u0000${key}`;
    const flying = this.#inFlight.get(flightKey);
    if (flying) {
      // Served without its own query: a hit as far as the database is concerned.
      this.coalesced++;
      this.hits++;
      return { value: (await flying) as T, hit: true };
    }
    this.misses++;
    const generation = this.#generations.get(thread) ?? 0;
    const loading = load().finally(() => this.#inFlight.delete(flightKey));
    this.#inFlight.set(flightKey, loading);
    const value = await loading;
    if ((this.#generations.get(thread) ?? 0) === generation) this.#store(thread, key, value);
    return { value, hit: false };
  }

  #store(thread: string, key: string, value: unknown): void {
    let entry = this.#entries.get(thread);
    if (!entry) {
      if (this.#entries.size >= CACHE_MAX_THREADS) this.#entries.delete(this.#entries.keys().next().value!);
      entry = new Map();
      this.#entries.set(thread, entry);
    }
    entry.set(key, value);
  }

  invalidate(thread: string): void {
    this.invalidations++;
    this.#entries.delete(thread);
    this.#generations.set(thread, (this.#generations.get(thread) ?? 0) + 1);
    // A generation counter per thread ever invalidated would grow without bound; an absent one
    // reads as 0, which only matters to a read in flight across this very moment.
    if (this.#generations.size > CACHE_MAX_THREADS * 4) this.#generations.clear();
  }

  /** After losing the channel: any invalidation might have been missed. */
  clear(): void {
    this.#entries.clear();
    this.#generations.clear();
  }

  get threads(): number {
    return this.#entries.size;
  }

  get hitRate(): number {
    const total = this.hits + this.misses;
    return total ? this.hits / total : 0;
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const USER = /^[A-Za-z0-9_.:@-]{1,100}$/;

export class RecallService {
  readonly #pool: pg.Pool;
  readonly #url: string;
  readonly #logger: Logger;
  readonly #limiter: RateLimiter;
  readonly #leases: Leases;
  readonly #circuits: Circuits;
  readonly apis: FakeApis;
  readonly cache = new ThreadCache();
  readonly #channel: string;
  readonly #timeouts: typeof TIMEOUTS_MS;
  readonly #timings = new Map<Operation, Timings>();
  readonly #statuses = new Map<string, number>();
  #rateLimited = 0;
  #leaseRefused = 0;
  #pendingRows: object[] = [];
  #flushTimer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #listener: pg.Client | undefined;
  #listenRetry: NodeJS.Timeout | undefined;
  #server: http.Server | undefined;
  #stopped = false;
  readonly #flushEveryMs: number;

  constructor(options: RecallServiceOptions) {
    this.#pool = options.pool;
    this.#url = options.url;
    this.#logger = options.logger;
    this.#limiter = new RateLimiter(options.pool);
    this.#leases = new Leases(options.pool, { logger: options.logger });
    this.#circuits = new Circuits(options.pool, { logger: options.logger });
    this.apis = options.apis ?? new FakeApis();
    this.#channel = options.channel ?? "steward_invalidation";
    this.#timeouts = { ...TIMEOUTS_MS, ...options.timeouts };
    this.#flushEveryMs = options.flushEveryMs ?? 1000;
  }

  /** Listens for invalidations, then serves on `port` of `host` (loopback by default); returns the port. */
  async listen(port = 0, host = "127.0.0.1"): Promise<number> {
    await this.#listen();
    this.#flushTimer = setInterval(() => void this.#flush(), this.#flushEveryMs);
    const server = http.createServer((request, response) => void this.#handle(request, response));
    server.keepAliveTimeout = 30_000;
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    return (server.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#flushTimer);
    clearTimeout(this.#listenRetry);
    if (this.#server) {
      this.#server.closeAllConnections();
      await new Promise<void>((resolve) => this.#server!.close(() => resolve()));
    }
    await this.#flush();
    await this.#listener?.end().catch(() => undefined);
  }

  /** LISTEN on the channel with a connection of its own; on losing it, clear the cache and come back. */
  async #listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#url, application_name: "recall cache listener" });
    client.on("notification", (message) => this.#onNotification(message.payload));
    client.on("error", (error) => {
      if (this.#stopped) return;
      this.#logger.warn({ err: error }, "lost the invalidation channel; the cache is cleared until it is back");
      this.cache.clear();
      this.#listener = undefined;
      this.#listenRetry = setTimeout(() => void this.#listen().catch(() => undefined), 1000);
    });
    await client.connect();
    await client.query(`listen ${pg.escapeIdentifier(this.#channel)}`);
    this.#listener = client;
  }

  #onNotification(payload: string | undefined): void {
    let tags: unknown;
    try {
      tags = JSON.parse(payload ?? "[]");
    } catch {
      return;
    }
    if (!Array.isArray(tags)) return;
    for (const tag of tags) {
      if (typeof tag === "string" && tag.startsWith("recall:thread:")) this.cache.invalidate(tag.slice(14));
    }
  }

  async #handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const began = performance.now();
    const url = new URL(request.url ?? "/", "http://localhost");
    let operation: Operation | undefined;
    let endpoint = url.pathname;
    let reply: Reply;
    try {
      if (request.method === "GET" && url.pathname === "/metrics") {
        return this.#sendMetrics(response, url.searchParams.get("format") === "json");
      }
      const route = routeOf(request.method ?? "GET", url.pathname);
      if (!route) {
        reply = fail(404, `no route ${request.method} ${url.pathname}`);
      } else {
        operation = route.operation;
        endpoint = route.endpoint;
        const user = request.headers["x-user-id"];
        if (typeof user !== "string" || !USER.test(user)) {
          reply = fail(400, "the x-user-id header must name the user (letters, digits, _.:@-, at most 100)");
        } else {
          const body = request.method === "POST" ? await readJson(request) : undefined;
          reply = await this.#limited(user, () => this.#run(route.operation, user, route.thread, body, url));
        }
      }
    } catch (error) {
      reply = replyOf(error, this.#logger);
    }
    const ms = performance.now() - began;
    response.writeHead(reply.status, { "content-type": "application/json", ...reply.headers });
    response.end(JSON.stringify(reply.body));
    if (operation) this.#account(operation, endpoint, request.method ?? "GET", reply, ms, began);
  }

  /** The rate limit, then a lease: the work runs only with both, and the lease is always released. */
  async #limited(user: string, work: () => Promise<Reply>): Promise<Reply> {
    const decision = await this.#limiter.hit(RATE_LIMIT_POLICY, user);
    if (!decision.allowed) {
      this.#rateLimited++;
      return fail(429, "rate limit: 10 requests a minute and 100 an hour per user", decision.headers);
    }
    try {
      const reply = await this.#leases.withLease(`recall:user:${user}`, MAX_CONCURRENT_PER_USER, work, {
        ttlMs: this.#timeouts.request + 5_000,
      });
      return new Reply(reply.status, reply.body, { ...decision.headers, ...reply.headers }, reply.cacheHit);
    } catch (error) {
      if (!(error instanceof LeaseUnavailableError)) throw error;
      this.#leaseRefused++;
      return fail(429, `at most ${MAX_CONCURRENT_PER_USER} requests at once per user`, {
        ...decision.headers,
        "Retry-After": "1",
      });
    }
  }

  async #run(operation: Operation, user: string, thread: string | undefined, body: unknown, url: URL): Promise<Reply> {
    switch (operation) {
      case "create_thread":
        return this.#createThread(user, body);
      case "list_messages":
        return this.#listMessages(user, thread!, url);
      case "batch_insert":
        return this.#batchInsert(user, thread!, body);
      case "resolve":
        return this.#resolve(user, thread!, body);
    }
  }

  async #createThread(user: string, body: unknown): Promise<Reply> {
    const title = isObject(body) && typeof body.title === "string" ? body.title.slice(0, 200) : "";
    const { rows } = await this.#pool.query<ThreadRow>(
      "insert into recall.recall_threads (user_id, title) values ($1, $2) returning id, user_id, title, last_message_at",
      [user, title],
    );
    return new Reply(201, rows[0]);
  }

  /** The thread if `user` owns it (cached), else undefined. */
  async #thread(user: string, id: string): Promise<ThreadRow | undefined> {
    const { value: row } = await this.cache.read(id, "thread", async () => {
      const { rows } = await this.#pool.query<ThreadRow>(
        "select id, user_id, title, last_message_at from recall.recall_threads where id = $1 and deleted_at is null",
        [id],
      );
      return rows[0] ?? null;
    });
    return row && row.user_id === user ? row : undefined;
  }

  async #listMessages(user: string, thread: string, url: URL): Promise<Reply> {
    if (!(await this.#thread(user, thread))) return fail(404, `no thread ${thread} of this user`);
    const cursor = url.searchParams.get("cursor") || null;
    const limitText = url.searchParams.get("limit") ?? "50";
    const limit = Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      return fail(400, `limit must be an integer from 1 to 1000, got ${limitText}`);
    const { value: page, hit } = await this.cache.read(thread, `page:${cursor ?? ""}:${limit}`, async () => {
      const { rows } = await this.#pool.query<{ page: MessagePage }>(
        "select recall.get_recall_messages_paginated($1::uuid, $2, $3) as page",
        [thread, cursor, limit],
      );
      return rows[0]!.page;
    });
    return new Reply(200, page, {}, hit);
  }

  async #insert(thread: string, messages: object[]): Promise<number> {
    const { rows } = await this.#pool.query<{ inserted: number }>(
      "select recall.insert_recall_messages_batch($1::jsonb) as inserted",
      [JSON.stringify(messages.map((m) => ({ ...m, thread_id: thread })))],
    );
    // This process knows at once; the others learn it from the channel.
    this.cache.invalidate(thread);
    return rows[0]!.inserted;
  }

  async #batchInsert(user: string, thread: string, body: unknown): Promise<Reply> {
    if (!(await this.#thread(user, thread))) return fail(404, `no thread ${thread} of this user`);
    const messages = isObject(body) ? body.messages : undefined;
    if (!Array.isArray(messages) || messages.length < 1 || messages.length > 1000 || !messages.every(isMessage)) {
      return fail(
        400,
        'messages must be an array of 1 to 1000 objects {"message_type": "user"|"assistant"|"transcript"|"song", "content": text, "candidate"?: object}',
      );
    }
    return new Reply(201, { inserted: await this.#insert(thread, messages) });
  }

  /** Transcription (for audio), intent, then completion or music recognition; both messages stored. */
  async #resolve(user: string, thread: string, body: unknown): Promise<Reply> {
    if (!(await this.#thread(user, thread))) return fail(404, `no thread ${thread} of this user`);
    const text = isObject(body) && typeof body.text === "string" ? body.text : undefined;
    const audio = isObject(body) && typeof body.audio === "string" ? body.audio : undefined;
    if (!text && !audio) return fail(400, 'resolve needs "text" or "audio" (a string)');
    const deadline = AbortSignal.timeout(this.#timeouts.request);
    const call = (api: ApiName, input: string) =>
      this.#circuits.withCircuit(
        `recall:${api}`,
        (signal) => this.apis.call(api, input, AbortSignal.any([signal, deadline])),
        { timeoutMs: this.#timeouts[api] },
      );
    const messages: object[] = [];
    let said = text ?? "";
    if (audio) {
      said = await call("transcription", audio);
      messages.push({ message_type: "transcript", content: said });
    } else {
      messages.push({ message_type: "user", content: said });
    }
    const intent = await call("intent", said);
    const answer = await call(intent === "song" ? "music_recognition" : "completion", said);
    messages.push({
      message_type: intent === "song" ? "song" : "assistant",
      content: answer,
      candidate: { intent, source: intent === "song" ? "music_recognition" : "completion" },
    });
    if (deadline.aborted) return fail(504, "the request took longer than 55 s");
    await this.#insert(thread, messages);
    return new Reply(200, { intent, answer });
  }

  #account(operation: Operation, endpoint: string, method: string, reply: Reply, ms: number, began: number): void {
    const { status } = reply;
    let timings = this.#timings.get(operation);
    if (!timings) this.#timings.set(operation, (timings = new Timings()));
    timings.add(ms);
    const statusKey = `${operation} ${status}`;
    this.#statuses.set(statusKey, (this.#statuses.get(statusKey) ?? 0) + 1);
    this.#pendingRows.push({
      at: new Date(performance.timeOrigin + began).toISOString(),
      endpoint,
      method,
      status,
      duration_ms: Math.round(ms * 1000) / 1000,
      cache_hit: reply.cacheHit,
      request_id: randomUUID(),
    });
    if (this.#pendingRows.length >= 10_000) void this.#flush();
  }

  /** Sends the request rows gathered so far to steward.record_requests (rollups make the 5-minute stats). */
  #flush(): Promise<void> {
    this.#flushing = this.#flushing.then(async () => {
      const rows = this.#pendingRows.splice(0, 10_000);
      if (rows.length === 0) return;
      await this.#pool
        .query("select steward.record_requests($1::jsonb)", [JSON.stringify(rows)])
        .catch((error: unknown) => {
          this.#logger.warn({ err: error, rows: rows.length }, "could not record request metrics; these rows are lost");
        });
    });
    return this.#flushing;
  }

  /** What /metrics reports: per operation its timings, and the cache. */
  snapshot() {
    const operations = Object.fromEntries([...this.#timings].map(([name, t]) => [name, t.summary()]));
    const statuses = Object.fromEntries(this.#statuses);
    const { hits, misses, coalesced, invalidations, threads, hitRate } = this.cache;
    return {
      operations,
      statuses,
      rateLimited: this.#rateLimited,
      leaseRefused: this.#leaseRefused,
      cache: { hits, misses, coalesced, invalidations, threads, hitRate },
    };
  }

  #sendMetrics(response: http.ServerResponse, json: boolean): void {
    const s = this.snapshot();
    if (json) {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify(s));
      return;
    }
    const lines = [
      "# HELP recall_request_duration_ms Request durations per operation (avg, min, max since start; p50, p95, p99 of the latest 10000).",
      "# TYPE recall_request_duration_ms gauge",
    ];
    for (const [operation, t] of Object.entries(s.operations)) {
      for (const stat of ["avg", "min", "max", "p50", "p95", "p99"] as const) {
        lines.push(`recall_request_duration_ms{operation="${operation}",stat="${stat}"} ${t[stat].toFixed(3)}`);
      }
    }
    lines.push("# TYPE recall_requests_total counter");
    for (const [key, count] of Object.entries(s.statuses)) {
      const [operation, status] = key.split(" ");
      lines.push(`recall_requests_total{operation="${operation}",status="${status}"} ${count}`);
    }
    lines.push(
      "# TYPE recall_rate_limited_total counter",
      `recall_rate_limited_total{reason="rate"} ${s.rateLimited}`,
      `recall_rate_limited_total{reason="concurrency"} ${s.leaseRefused}`,
      "# HELP recall_cache_hit_ratio Thread cache hits (coalesced reads included) over reads since start; the checklist's target is 0.7.",
      "# TYPE recall_cache_hit_ratio gauge",
      `recall_cache_hit_ratio ${s.cache.hitRate.toFixed(4)}`,
      "# TYPE recall_cache_hits_total counter",
      `recall_cache_hits_total ${s.cache.hits}`,
      "# TYPE recall_cache_misses_total counter",
      `recall_cache_misses_total ${s.cache.misses}`,
      "# TYPE recall_cache_coalesced_total counter",
      `recall_cache_coalesced_total ${s.cache.coalesced}`,
      "# TYPE recall_cache_invalidations_total counter",
      `recall_cache_invalidations_total ${s.cache.invalidations}`,
      "# TYPE recall_cache_threads gauge",
      `recall_cache_threads ${s.cache.threads}`,
    );
    response.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
    response.end(lines.join("\n") + "\n");
  }
}

function routeOf(
  method: string,
  pathname: string,
): { operation: Operation; endpoint: string; thread?: string } | undefined {
  if (method === "POST" && pathname === "/threads") return { operation: "create_thread", endpoint: "/threads" };
  const match = /^\/threads\/([^/]+)\/(messages|resolve)$/.exec(pathname);
  if (!match || !UUID.test(match[1]!)) return undefined;
  const thread = match[1]!.toLowerCase();
  if (match[2] === "resolve")
    return method === "POST" ? { operation: "resolve", endpoint: "/threads/:id/resolve", thread } : undefined;
  if (method === "GET") return { operation: "list_messages", endpoint: "/threads/:id/messages", thread };
  if (method === "POST") return { operation: "batch_insert", endpoint: "/threads/:id/messages", thread };
  return undefined;
}

class BadRequest extends Error {}

async function readJson(request: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > 1_000_000) throw new BadRequest("the body is larger than 1 MB");
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new BadRequest("the body is not JSON");
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const isMessage = (value: unknown): value is object =>
  isObject(value) &&
  ["user", "assistant", "transcript", "song"].includes(value.message_type as string) &&
  typeof value.content === "string" &&
  (value.candidate === undefined || isObject(value.candidate)) &&
  Object.keys(value).every((key) => ["message_type", "content", "candidate"].includes(key));

function replyOf(error: unknown, logger: Logger): Reply {
  if (error instanceof BadRequest) return fail(400, error.message);
  if (error instanceof CircuitOpenError)
    return fail(503, `${error.circuit} is unavailable (circuit open)`, { "Retry-After": "60" });
  if (error instanceof CircuitTimeoutError) return fail(504, error.message);
  if (error instanceof FakeApiError) return fail(502, error.message);
  const code = (error as { code?: string }).code;
  if (typeof code === "string" && code.startsWith("22")) return fail(400, (error as Error).message);
  logger.error({ err: error }, "recall request failed");
  return fail(500, "internal error");
}
