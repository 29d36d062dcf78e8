// Concurrency leases for application code: at most N holders of a key at once, across every
// process. `withLease` always releases (try/finally); a holder that dies frees its slot when
// the lease's ttl ends, with no cleanup needed.
import type pg from "pg";
import { StewardError } from "../errors.ts";
import type { Logger } from "../logger.ts";

/** Every slot of the key is held: try again later. */
export class LeaseUnavailableError extends StewardError {
  readonly key: string;
  readonly maxConcurrent: number;
  constructor(key: string, maxConcurrent: number) {
    super("LEASE_UNAVAILABLE", `all ${maxConcurrent} leases of "${key}" are held`);
    this.key = key;
    this.maxConcurrent = maxConcurrent;
  }
}

export interface LeaseOptions {
  /** How long the lease counts if never released (default 60 s). */
  ttlMs?: number;
}

function ttlOf(options: LeaseOptions): string {
  const ttlMs = options.ttlMs ?? 60_000;
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`ttlMs must be a positive number, got ${ttlMs}`);
  return `${ttlMs} milliseconds`;
}

export class Leases {
  readonly #pool: pg.Pool;
  readonly #logger: Logger | undefined;

  constructor(pool: pg.Pool, options: { logger?: Logger } = {}) {
    this.#pool = pool;
    this.#logger = options.logger;
  }

  /** A lease id, or null when `maxConcurrent` unexpired leases of `key` exist. */
  async acquire(key: string, maxConcurrent: number, options: LeaseOptions = {}): Promise<string | null> {
    const { rows } = await this.#pool.query<{ lease: string | null }>({
      name: "steward.lease_acquire",
      text: "select steward.lease_acquire($1, $2, $3::interval) as lease",
      values: [key, maxConcurrent, ttlOf(options)],
    });
    return rows[0]?.lease ?? null;
  }

  /** Whether the lease was still held (false when it had expired or was released already). */
  async release(lease: string): Promise<boolean> {
    const { rows } = await this.#pool.query<{ released: boolean }>({
      name: "steward.lease_release",
      text: "select steward.lease_release($1) as released",
      values: [lease],
    });
    return rows[0]?.released === true;
  }

  /**
   * Runs `work` holding one of `maxConcurrent` slots of `key`, and releases the slot however
   * `work` ends. Throws LeaseUnavailableError, without running `work`, when every slot is held.
   */
  async withLease<T>(
    key: string,
    maxConcurrent: number,
    work: (lease: string) => Promise<T>,
    options: LeaseOptions = {},
  ): Promise<T> {
    const lease = await this.acquire(key, maxConcurrent, options);
    if (lease === null) throw new LeaseUnavailableError(key, maxConcurrent);
    try {
      return await work(lease);
    } finally {
      // A failed release must not hide the work's own outcome: the lease expires with its ttl.
      await this.release(lease).catch((error: unknown) => {
        this.#logger?.warn({ err: error, key, lease }, "could not release lease; it expires with its ttl");
      });
    }
  }
}
