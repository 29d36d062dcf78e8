// Rate limits for application code: `hit(policy, key)` answers whether a request may go ahead,
// with the response headers to send. Hits made in the same tick of the event loop go to the
// database together, as one call of steward.rate_limit_hits (one round trip, one transaction);
// each caller still gets the exact answer its hit would have got alone.
import type pg from "pg";
import { StewardError } from "../errors.ts";
import { rateLimitHeaders, type RateLimitHeaders } from "./rate-limit-headers.ts";

/** One window of the policy, as it stands after (or, when denied, without) the hit. */
export interface RateLimitWindow {
  /** max_requests of the window. */
  limit: number;
  /** Its length. */
  windowMs: number;
  /** Further unit hits this window would admit right now. */
  remaining: number;
  /** Until this window is back to its full burst. */
  resetMs: number;
}

export interface RateLimitDecision {
  allowed: boolean;
  /** Of the window closest to exhaustion. */
  remaining: number;
  /** 0 when allowed; else the smallest wait after which the same hit succeeds if no other traffic comes. */
  retryAfterMs: number;
  /** Of the window closest to exhaustion: until it is back to its full burst. */
  resetMs: number;
  policy: string;
  /** Every window of the policy, shortest first. */
  windows: RateLimitWindow[];
  /** RateLimit, RateLimit-Policy, RateLimit-Limit/-Remaining/-Reset, and Retry-After when denied. */
  headers: RateLimitHeaders;
}

/** A hit the database refused to count: unknown policy, empty key, cost out of range. */
export class RateLimitArgumentError extends StewardError {
  /** The SQLSTATE the database gave (class 22), or 22023 when the client caught it first. */
  readonly sqlstate: string;
  readonly hint: string | undefined;
  constructor(message: string, sqlstate = "22023", hint?: string) {
    super("RATE_LIMIT_ARGUMENT", message);
    this.sqlstate = sqlstate;
    this.hint = hint;
  }
}

export interface RateLimiterOptions {
  /**
   * Most hits sent in one statement; a tick with more is split into several statements that
   * run side by side on the pool's connections. Default 64.
   */
  maxBatch?: number;
  /**
   * Statements a busy tick is split into at least (when each still carries 16 hits or more), so
   * that the database works on them side by side, on several cores. Default 2.
   */
  parallel?: number;
}

/** Below this many hits per statement, splitting costs more than it brings. */
const SMALLEST_SPLIT = 16;

interface PendingHit {
  policy: string;
  key: string;
  cost: number;
  resolve(decision: RateLimitDecision): void;
  reject(error: unknown): void;
}

interface HitRow {
  hit: number;
  allowed: boolean | null;
  remaining: number | null;
  retry_after_ms: string | null;
  reset_ms: string | null;
  window_limits: number[] | null;
  window_per_ms: string[] | null;
  window_remaining: number[] | null;
  window_reset_ms: string[] | null;
  error_code: string | null;
  error_message: string | null;
  error_hint: string | null;
}

const HITS = {
  name: "steward.rate_limit_hits",
  text: "select * from steward.rate_limit_hits($1::text[], $2::text[], $3::integer[])",
};

/** Why the database would refuse this hit for the whole batch, or undefined when it can go. */
function problemWith(policy: unknown, key: unknown, cost: unknown): string | undefined {
  if (typeof policy !== "string" || policy === "") return "policy must be a non-empty string";
  if (typeof key !== "string" || key === "") return "key must be a non-empty string";
  // A NUL cannot be sent in a text value: it would fail every hit of the batch, not just this one.
  if (key.includes("\u0000") || policy.includes("\u0000")) return "policy and key must not contain NUL characters";
  if (typeof cost !== "number" || !Number.isInteger(cost) || cost <= 0 || cost > 2_147_483_647) {
    return `cost must be a positive integer, got ${String(cost)}`;
  }
  return undefined;
}

export class RateLimiter {
  readonly #pool: pg.Pool;
  readonly #maxBatch: number;
  readonly #parallel: number;
  #pending: PendingHit[] = [];
  #flushScheduled = false;

  constructor(pool: pg.Pool, options: RateLimiterOptions = {}) {
    const { maxBatch = 64, parallel = 2 } = options;
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 10_000) {
      throw new RangeError(`maxBatch must be an integer from 1 to 10000, got ${maxBatch}`);
    }
    if (!Number.isInteger(parallel) || parallel < 1)
      throw new RangeError(`parallel must be a positive integer, got ${parallel}`);
    this.#pool = pool;
    this.#maxBatch = maxBatch;
    this.#parallel = parallel;
  }

  /** Counts a hit of `cost` units against every window of `policy` for `key`, all or nothing. */
  hit(policy: string, key: string, cost = 1): Promise<RateLimitDecision> {
    const problem = problemWith(policy, key, cost);
    if (problem) return Promise.reject(new RateLimitArgumentError(problem));
    return new Promise((resolve, reject) => {
      this.#pending.push({ policy, key, cost, resolve, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        // setImmediate runs after every promise continuation of this tick: callers woken by the
        // previous answer have all made their next hit by then.
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#flushScheduled = false;
    const pending = this.#pending;
    this.#pending = [];
    const statements = Math.max(
      Math.ceil(pending.length / this.#maxBatch),
      Math.min(this.#parallel, Math.floor(pending.length / SMALLEST_SPLIT)),
    );
    const size = Math.ceil(pending.length / statements);
    for (let start = 0; start < pending.length; start += size) {
      void this.#send(pending.slice(start, start + size));
    }
  }

  async #send(batch: PendingHit[]): Promise<void> {
    let rows: HitRow[];
    try {
      const result = await this.#pool.query<HitRow>({
        ...HITS,
        values: [batch.map((h) => h.policy), batch.map((h) => h.key), batch.map((h) => h.cost)],
      });
      rows = result.rows;
    } catch (error) {
      for (const pending of batch) pending.reject(error);
      return;
    }
    const answered = new Array<boolean>(batch.length).fill(false);
    for (const row of rows) {
      const pending = batch[row.hit - 1];
      if (!pending) continue;
      answered[row.hit - 1] = true;
      if (row.error_code) {
        pending.reject(
          new RateLimitArgumentError(row.error_message ?? "bad hit", row.error_code, row.error_hint ?? undefined),
        );
        continue;
      }
      pending.resolve(new Decision(pending.policy, row));
    }
    answered.forEach((done, index) => {
      if (!done)
        batch[index]!.reject(
          new StewardError("RATE_LIMIT_NO_ANSWER", "steward.rate_limit_hits returned no row for this hit"),
        );
    });
  }
}

/**
 * A decision whose headers are built when first read: most callers of a busy limiter read only
 * `allowed`, and building the header strings costs more than the rest of the decision.
 */
class Decision implements RateLimitDecision {
  readonly allowed: boolean;
  readonly remaining: number;
  readonly retryAfterMs: number;
  readonly resetMs: number;
  readonly policy: string;
  readonly windows: RateLimitWindow[];
  #headers: RateLimitHeaders | undefined;

  constructor(policy: string, row: HitRow) {
    const limits = row.window_limits ?? [];
    this.allowed = row.allowed === true;
    this.remaining = row.remaining ?? 0;
    this.retryAfterMs = Number(row.retry_after_ms ?? 0);
    this.resetMs = Number(row.reset_ms ?? 0);
    this.policy = policy;
    this.windows = limits.map((limit, index) => ({
      limit,
      windowMs: Number(row.window_per_ms![index]),
      remaining: row.window_remaining![index]!,
      resetMs: Number(row.window_reset_ms![index]),
    }));
  }

  get headers(): RateLimitHeaders {
    return (this.#headers ??= rateLimitHeaders(this));
  }

  toJSON() {
    const { allowed, remaining, retryAfterMs, resetMs, policy, windows, headers } = this;
    return { allowed, remaining, retryAfterMs, resetMs, policy, windows, headers };
  }
}
