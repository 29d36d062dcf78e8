// Draining the invalidation queue: claim due entries, deliver their tags to the sinks, complete
// or fail them. The SQL (steward.claim_invalidations & co.) keeps the guarantees; this file
// moves tags. `mv:<schema>.<view>` tags schedule a refresh of that view instead of a delivery.
import { createHmac, randomUUID } from "node:crypto";
import pg from "pg";
import { Circuits } from "../client/circuits.ts";
import type { Config } from "../config.ts";
import type { Logger } from "../logger.ts";
import { StewardError } from "../errors.ts";

/** A sink could not deliver. `attempted: false` means it did not try (open circuit). */
class SinkError extends StewardError {
  readonly retryAfterMs: number | undefined;
  readonly attempted: boolean;
  constructor(message: string, options: { retryAfterMs?: number; attempted?: boolean; cause?: unknown } = {}) {
    super("SINK", message, { cause: options.cause });
    this.retryAfterMs = options.retryAfterMs;
    this.attempted = options.attempted ?? true;
  }
}

export interface Sink {
  name: string;
  /**
   * Set on the notify sink: its delivery is transactional, so when it is the only sink the
   * drainer delivers and completes in one statement (steward.drain_notify), exactly once.
   */
  notifyChannel?: string;
  /** Delivers all the tags or throws (SinkError for a known failure). */
  deliver(tags: string[]): Promise<void>;
}

/** pg_notify's payload limit is 8000 bytes; stay under it. */
const NOTIFY_PAYLOAD_LIMIT = 7999;

/** Splits tags into JSON arrays of at most `limit` bytes each. */
export function notifyPayloads(tags: string[], limit = NOTIFY_PAYLOAD_LIMIT): string[] {
  const payloads: string[] = [];
  let current: string[] = [];
  let size = 2; // "[]"
  for (const tag of tags) {
    const encoded = JSON.stringify(tag);
    const bytes = Buffer.byteLength(encoded) + (current.length ? 1 : 0);
    if (current.length && size + bytes > limit) {
      payloads.push(`[${current.join(",")}]`);
      current = [];
      size = 2;
    }
    current.push(encoded);
    size += Buffer.byteLength(encoded) + (current.length > 1 ? 1 : 0);
  }
  if (current.length) payloads.push(`[${current.join(",")}]`);
  return payloads;
}

/** pg_notify on `channel`: JSON arrays of tags, all in one transaction (all or nothing). */
export function notifySink(pool: pg.Pool, channel: string): Sink {
  return {
    name: "notify",
    notifyChannel: channel,
    async deliver(tags) {
      const payloads = notifyPayloads(tags);
      await pool.query("select pg_catalog.pg_notify($1, p) from unnest($2::text[]) as p", [channel, payloads]);
    },
  };
}

export interface WebhookOptions {
  url: string;
  /** HMAC-SHA256 key; the signature goes in `X-Steward-Signature: sha256=<hex>`. */
  secret: string | undefined;
  timeoutMs: number;
  /** Name of the shared circuit breaker (steward.circuit_*) guarding the endpoint. */
  circuit: string;
  pool: pg.Pool;
  /** Where the circuit's transitions made by this process are logged. */
  logger?: Logger;
}

/** Seconds or an HTTP date, as Retry-After may be; undefined when absent or unreadable. */
function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export function signature(secret: string, timestamp: string, body: string): string {
  return "sha256=" + createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

/**
 * The URL as errors, logs and dead letters may show it: no query string (it often carries a
 * token), no fragment, no credentials.
 */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}${parsed.search ? "?[redacted]" : ""}`;
  } catch {
    return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/?#]*@/i, "$1").replace(/[?#][\s\S]*$/, "?[redacted]");
  }
}

/** An error's message and its causes', with `url` redacted wherever it appears. */
function describeFailure(error: unknown, url: string): string {
  const messages: string[] = [];
  for (let current = error; current instanceof Error && messages.length < 4; current = current.cause) {
    messages.push(current.message);
  }
  const redacted = redactUrl(url);
  const query = (() => {
    try {
      return new URL(url).search;
    } catch {
      return "";
    }
  })();
  return messages
    .map((message) => {
      let text = message.split(url).join(redacted);
      if (query) text = text.split(query).join("?[redacted]");
      return text;
    })
    .join(": ");
}

/**
 * POSTs `{"tags": [...]}` with a timeout and an HMAC signature, behind a shared circuit breaker.
 * Redirects are refused, not followed: the signed body must not be re-sent to another address.
 */
export function webhookSink(options: WebhookOptions): Sink {
  const circuits = new Circuits(options.pool, { logger: options.logger });
  const record = (success: boolean, error?: string) => circuits.record(options.circuit, success, error);
  const shownUrl = redactUrl(options.url);
  return {
    name: "webhook",
    async deliver(tags) {
      if (!(await circuits.allow(options.circuit))) {
        throw new SinkError(`circuit ${options.circuit} is open`, { attempted: false });
      }
      const body = JSON.stringify({ tags, sent_at: new Date().toISOString() });
      const timestamp = String(Math.floor(Date.now() / 1000));
      const headers: Record<string, string> = { "content-type": "application/json", "x-steward-timestamp": timestamp };
      if (options.secret) headers["x-steward-signature"] = signature(options.secret, timestamp, body);
      let response: Response;
      try {
        response = await fetch(options.url, {
          method: "POST",
          headers,
          body,
          redirect: "manual",
          signal: AbortSignal.timeout(options.timeoutMs),
        });
      } catch (error) {
        // Not the error itself as the cause: its message (and its causes') may hold the URL.
        const message = `webhook ${shownUrl} did not answer: ${describeFailure(error, options.url)}`;
        await record(false, message);
        throw new SinkError(message);
      }
      // The body is not needed; read it so the connection can be reused.
      await response.arrayBuffer().catch(() => undefined);
      if (response.ok) {
        await record(true);
        return;
      }
      if (response.status >= 300 && response.status < 400) {
        const location = response.headers.get("location");
        const message =
          `webhook ${shownUrl} answered ${response.status}, a redirect${location ? ` to ${redactUrl(location)}` : ""}; ` +
          "redirects are not followed (the signed body would go to another address): set STEWARD_WEBHOOK_URL to the final address";
        await record(false, message);
        throw new SinkError(message);
      }
      const message = `webhook ${shownUrl} answered ${response.status}`;
      await record(false, message);
      throw new SinkError(message, { retryAfterMs: parseRetryAfter(response.headers.get("retry-after")) });
    },
  };
}

/**
 * The sinks the configuration names, in the order given. The webhook's circuit is named
 * steward:webhook:<host>: the steward: prefix is reserved, so no client can steer it.
 */
export function sinksFromConfig(config: Config, pool: pg.Pool, logger?: Logger): Sink[] {
  return config.sinks.map((name) =>
    name === "notify"
      ? notifySink(pool, config.notifyChannel)
      : webhookSink({
          url: config.webhookUrl!,
          secret: config.webhookSecret,
          timeoutMs: config.webhookTimeoutMs,
          circuit: `steward:webhook:${new URL(config.webhookUrl!).host}`,
          pool,
          logger,
        }),
  );
}

export interface Claimed {
  id: string;
  tag: string;
  attempts: number;
}

export interface DrainOptions {
  pool: pg.Pool;
  sinks: Sink[];
  logger: Logger;
  batchSize: number;
  visibilityMs: number;
}

export interface BatchResult {
  claimed: number;
  delivered: number;
  failed: number;
  released: number;
  refreshes: number;
  /** Set when a sink refused without trying (open circuit): wait this long before claiming again. */
  backoffMs?: number;
}

const MV_TAG = /^mv:/;

/** One round: claim a batch, deliver it, record the outcome. */
export async function drainBatch(options: DrainOptions): Promise<BatchResult> {
  const { pool, logger } = options;
  const only = options.sinks.length === 1 ? options.sinks[0] : undefined;
  if (only?.notifyChannel) {
    const { rows } = await pool.query<{ delivered: number; refreshes: number; failed: number }>(
      "select delivered, refreshes, failed from steward.drain_notify($1, $2)",
      [options.batchSize, only.notifyChannel],
    );
    const { delivered, refreshes, failed } = rows[0]!;
    return { claimed: delivered + refreshes + failed, delivered, failed, released: 0, refreshes };
  }
  const { rows } = await pool.query<Claimed>(
    "select id::text, tag, attempts from steward.claim_invalidations($1, $2::interval)",
    [options.batchSize, `${options.visibilityMs} milliseconds`],
  );
  const result: BatchResult = { claimed: rows.length, delivered: 0, failed: 0, released: 0, refreshes: 0 };
  if (!rows.length) return result;

  const views = rows.filter((row) => MV_TAG.test(row.tag));
  const deliveries = rows.filter((row) => !MV_TAG.test(row.tag));
  const complete = async (ids: string[]) => {
    if (ids.length) await pool.query("select steward.complete_invalidations($1::bigint[])", [ids]);
  };

  if (views.length) {
    // refresh_from_tags fails a bad entry alone; should the call itself fail (a lost
    // connection), the mv: entries are failed and the deliveries below still go out.
    const viewIds = views.map((row) => row.id);
    try {
      const { rows: refreshed } = await pool.query<{ scheduled: number }>(
        "select steward.refresh_from_tags($1::bigint[]) as scheduled",
        [viewIds],
      );
      result.refreshes = refreshed[0]!.scheduled;
    } catch (error) {
      logger.warn({ err: error, views: views.length }, "scheduling refreshes failed; the entries will be retried");
      await pool
        .query("select steward.fail_invalidations($1::bigint[], $2)", [viewIds, (error as Error).message])
        .catch((failure: unknown) =>
          logger.warn({ err: failure }, "could not record the failure; the claims will expire"),
        );
    }
    result.failed += views.length - result.refreshes;
  }

  if (deliveries.length) {
    const ids = deliveries.map((row) => row.id);
    const tags = [...new Set(deliveries.map((row) => row.tag))];
    try {
      for (const sink of options.sinks) await sink.deliver(tags);
      await complete(ids);
      result.delivered = ids.length;
    } catch (error) {
      const sinkError = error instanceof SinkError ? error : undefined;
      const retryIn = sinkError?.retryAfterMs === undefined ? null : `${sinkError.retryAfterMs} milliseconds`;
      if (sinkError && !sinkError.attempted) {
        // Nothing was tried: give the entries back without spending an attempt, and wait.
        result.backoffMs = 1000;
        await pool.query("select steward.release_invalidations($1::bigint[], $2::interval)", [ids, "1 second"]);
        result.released = ids.length;
      } else {
        logger.warn({ err: error, tags: tags.length }, "delivery failed; the entries will be retried");
        await pool.query("select steward.fail_invalidations($1::bigint[], $2, $3::interval)", [
          ids,
          (error as Error).message,
          retryIn,
        ]);
        result.failed += ids.length;
      }
    }
  }
  return result;
}

/** Drains until the queue has nothing due or `budgetMs` passes; for the drain_invalidations task. */
export async function drainUntilEmpty(
  options: DrainOptions,
  budgetMs: number,
): Promise<BatchResult & { batches: number }> {
  const deadline = Date.now() + budgetMs;
  const total = { claimed: 0, delivered: 0, failed: 0, released: 0, refreshes: 0, batches: 0 };
  while (Date.now() < deadline) {
    const batch = await drainBatch(options);
    if (!batch.claimed) break;
    total.batches++;
    total.claimed += batch.claimed;
    total.delivered += batch.delivered;
    total.failed += batch.failed;
    total.released += batch.released;
    total.refreshes += batch.refreshes;
    if (batch.backoffMs) break;
  }
  return total;
}

/**
 * How long the drainer should sleep: until something in the queue may be claimed, within
 * [MIN_SLEEP_MS, maxMs]. An entry that is due but was not claimed is held by a transaction still
 * running (another drainer's claim, a delivery completing late): polling it at once would spin.
 */
const MIN_SLEEP_MS = 50;
async function nextDueMs(pool: pg.Pool, maxMs: number): Promise<number> {
  const { rows } = await pool.query<{ ms: number | null }>(
    "select (extract(epoch from steward.next_invalidation_due() - now()) * 1000)::float8 as ms",
  );
  const ms = rows[0]?.ms;
  if (ms === null || ms === undefined) return maxMs;
  return Math.min(maxMs, Math.max(MIN_SLEEP_MS, Math.ceil(ms)));
}

const INVALIDATION_CHANNEL = "steward_invalidations";

/**
 * The worker's continuous drainer: drains while there is work, then sleeps until a NOTIFY on
 * `steward_invalidations` (sent by enqueues while a drainer sleeps), the next due entry, or the
 * poll interval.
 */
export class InvalidationDrainer {
  /** Its row in steward.sleeping_drainers, written while it finds nothing to claim. */
  private readonly id = `drainer:${randomUUID()}`;
  private asleep = false;
  private running = false;
  private wake: (() => void) | undefined;
  /** A NOTIFY that came while no sleep was waiting: the next sleep returns at once. */
  private notified = false;
  private loop: Promise<void> | undefined;
  private listener: pg.Client | undefined;

  constructor(private readonly options: DrainOptions & { url: string; pollIntervalMs: number }) {}

  async start(): Promise<void> {
    this.running = true;
    await this.listen();
    this.loop = this.run();
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.options.url, application_name: "steward drainer" });
    client.on("error", (error) => {
      this.options.logger.warn({ err: error }, "drainer lost its LISTEN connection; polling until it is back");
      this.listener = undefined;
      if (this.running) setTimeout(() => void this.listen().catch(() => undefined), 1000);
    });
    client.on("notification", () => {
      this.notified = true;
      this.wake?.();
    });
    await client.connect();
    await client.query(`listen ${INVALIDATION_CHANNEL}`);
    this.listener = client;
  }

  private sleep(ms: number): Promise<void> {
    if (this.notified || !this.running) {
      this.notified = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        this.notified = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    const { logger, pool, pollIntervalMs } = this.options;
    let failures = 0;
    let napped = false;
    let registeredUntil = 0;
    while (this.running) {
      try {
        const batch = await drainBatch(this.options);
        failures = 0;
        if (batch.claimed) {
          napped = false;
          if (this.asleep) {
            this.asleep = false;
            registeredUntil = 0;
            await pool.query("select steward.drainer_wakes($1)", [this.id]);
          }
          logger.debug(batch, "drained a batch");
          if (batch.backoffMs) await this.sleep(batch.backoffMs);
          continue;
        }
        if (!this.asleep) {
          // Under steady traffic the queue empties after every batch: a short nap gathers the
          // next entries instead of going to sleep and being woken (a NOTIFY per enqueue).
          if (!napped) {
            napped = true;
            await this.sleep(MIN_SLEEP_MS);
            continue;
          }
          // Going to sleep: say so (enqueues then send NOTIFY), then look once more, so that an
          // entry committed before an enqueue could see the drainer asleep is found by the look.
          registeredUntil = await this.register(pollIntervalMs);
          this.asleep = true;
          continue;
        }
        // Renewed when it would lapse during the next sleep.
        if (Date.now() + pollIntervalMs > registeredUntil) registeredUntil = await this.register(pollIntervalMs);
        await this.sleep(await nextDueMs(pool, pollIntervalMs));
      } catch (error) {
        failures++;
        const delay = Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
        logger.error({ err: error, retryInMs: delay }, "drainer failed; retrying");
        await this.sleep(delay);
      }
    }
  }

  /**
   * Writes its row in steward.sleeping_drainers, valid for two sleeps and a second (a drainer
   * that died stops counting then); returns when it must be renewed by.
   */
  private async register(sleepMs: number): Promise<number> {
    const renewBy = Date.now() + 2 * sleepMs;
    await this.options.pool.query("select steward.drainer_sleeps($1, $2::interval)", [
      this.id,
      `${2 * sleepMs + 1000} milliseconds`,
    ]);
    return renewBy;
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.options.pool.query("select steward.drainer_wakes($1)", [this.id]).catch(() => undefined);
    await this.listener?.end().catch(() => undefined);
  }
}
