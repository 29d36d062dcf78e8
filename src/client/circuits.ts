// Circuit breakers shared by every process: `withCircuit(name, work)` asks the database whether
// the call may go ahead (closed, or a half-open probe slot), runs it, and reports the outcome.
// An open circuit rejects at once with CircuitOpenError, without running the work.
import type pg from "pg";
import { StewardError } from "../errors.ts";
import type { Logger } from "../logger.ts";

export type CircuitState = "closed" | "open" | "half_open";

/** The circuit is open (or half-open with every probe slot taken): the call was not made. */
export class CircuitOpenError extends StewardError {
  readonly circuit: string;
  constructor(circuit: string) {
    super("CIRCUIT_OPEN", `circuit "${circuit}" is open`);
    this.circuit = circuit;
  }
}

export interface WithCircuitOptions {
  /** Whether an error counts as a failure of the dependency (default: every error does). */
  isFailure?: (error: unknown) => boolean;
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error)).slice(0, 2000);

export class Circuits {
  readonly #pool: pg.Pool;
  readonly #logger: Logger | undefined;

  constructor(pool: pg.Pool, options: { logger?: Logger } = {}) {
    this.#pool = pool;
    this.#logger = options.logger;
  }

  /** Whether a call through `name` may go ahead now (in half-open, this takes a probe slot). */
  async allow(name: string): Promise<boolean> {
    const { rows } = await this.#pool.query<{ allowed: boolean }>({
      name: "steward.circuit_allow",
      text: "select steward.circuit_allow($1) as allowed",
      values: [name],
    });
    return rows[0]?.allowed === true;
  }

  /** Reports a call's outcome; returns the circuit's new state. */
  async record(name: string, success: boolean, error?: string): Promise<CircuitState> {
    const { rows } = await this.#pool.query<{ state: CircuitState }>({
      name: "steward.circuit_record",
      text: "select steward.circuit_record($1, $2, $3) as state",
      values: [name, success, error ?? null],
    });
    return rows[0]!.state;
  }

  /** Runs `work` through the circuit `name`; throws CircuitOpenError when it may not run. */
  async withCircuit<T>(name: string, work: () => Promise<T>, options: WithCircuitOptions = {}): Promise<T> {
    if (!(await this.allow(name))) throw new CircuitOpenError(name);
    let result: T;
    try {
      result = await work();
    } catch (error) {
      const failed = options.isFailure ? options.isFailure(error) : true;
      await this.record(name, !failed, failed ? messageOf(error) : undefined).catch((recordError: unknown) => {
        this.#logger?.warn({ err: recordError, circuit: name }, "could not record a call's outcome");
      });
      throw error;
    }
    // The work succeeded and its effects stand: a failure to record must not turn it into an error.
    await this.record(name, true).catch((recordError: unknown) => {
      this.#logger?.warn({ err: recordError, circuit: name }, "could not record a call's outcome");
    });
    return result;
  }
}
