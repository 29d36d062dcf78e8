// A test clock for rate limits, leases and circuits: one connection of the database owner on
// which the setting steward.clock is set (steward.clock() honours it only for the owner), so a
// test moves time forward instead of sleeping through a window, a ttl or a cooldown.
import type pg from "pg";

export interface TestClock {
  /** The connection whose time is set; run the statements under test on it. */
  client: pg.PoolClient;
  /** The time the clock shows now. */
  readonly now: Date;
  /** Sets the clock to `at`. */
  set(at: Date): Promise<void>;
  /** Moves the clock by `ms` milliseconds (forward when positive). */
  advance(ms: number): Promise<void>;
  /** Gives the connection back to its pool with its clock, role and transaction reset. */
  release(): Promise<void>;
}

/**
 * A clock set to `start` (default: the database's time now) on a connection of `pool`, which
 * must connect as the schema's owner. With `role`, the connection then acts as that role
 * (SET ROLE), as an application role would, while its clock stays settable.
 */
export async function testClock(pool: pg.Pool, options: { start?: Date; role?: string } = {}): Promise<TestClock> {
  const client = await pool.connect();
  let now = options.start ?? (await client.query<{ now: Date }>("select clock_timestamp() as now")).rows[0]!.now;
  const set = async (at: Date) => {
    await client.query("select set_config('steward.clock', $1, false)", [at.toISOString()]);
    now = at;
  };
  try {
    await set(now);
    if (options.role) await client.query(`set role ${options.role}`);
  } catch (error) {
    client.release(true);
    throw error;
  }
  return {
    client,
    get now() {
      return now;
    },
    set,
    advance: (ms) => set(new Date(now.getTime() + ms)),
    async release() {
      try {
        await client.query("rollback; reset role; reset steward.clock");
        client.release();
      } catch {
        client.release(true);
      }
    },
  };
}
