// Circuit breakers shared by every process: `withCircuit(name, work)` asks the database whether
// the call may go ahead (closed, or a half-open probe slot), runs it, and reports the outcome.
// An open circuit rejects at once with CircuitOpenError, without running the work. Each
// transition the database counts for a call of this process is logged here, once, by the
// process that made it.
import type pg from "pg";
import { StewardError } from "../errors.ts";
import type { Logger } from "../logger.ts";

export type CircuitState = "closed" | "open" | "half_open";

/** A move of a circuit from one state to another, made (and counted) by one call. */
export interface CircuitTransition {
  from: CircuitState;
  to: CircuitState;
}

/** The circuit is open (or half-open with every probe slot taken): the call was not made. */
export class CircuitOpenError extends StewardError {
  readonly circuit: string;
  constructor(circuit: string) {
    super("CIRCUIT_OPEN", `circuit "${circuit}" is open`);
    this.circuit = circuit;
  }
}

/** The work ran longer than `timeoutMs`: its signal was aborted and the call counted as a failure. */
export class CircuitTimeoutError extends StewardError {
  readonly circuit: string;
  readonly timeoutMs: number;
  constructor(circuit: string, timeoutMs: number) {
    super("CIRCUIT_TIMEOUT", `call through circuit "${circuit}" timed out after ${timeoutMs} ms`);
    this.circuit = circuit;
    this.timeoutMs = timeoutMs;
  }
}

export interface WithCircuitOptions {
  /** Whether an error counts as a failure of the dependency (default: every error does). A timeout always does. */
  isFailure?: (error: unknown) => boolean;
  /**
   * Gives up on the work after this many milliseconds: the signal passed to `work` is aborted,
   * the call counts as a failure and withCircuit rejects with CircuitTimeoutError.
   */
  timeoutMs?: number;
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error)).slice(0, 2000);

export class Circuits {
  readonly #pool: pg.Pool;
  readonly #logger: Logger | undefined;

  /** With `logger`, every transition a call of this process makes is logged (opening as a warning). */
  constructor(pool: pg.Pool, options: { logger?: Logger } = {}) {
    this.#pool = pool;
    this.#logger = options.logger;
  }

  /** Whether a call through `name` may go ahead now (in half-open, this takes a probe slot). */
  async allow(name: string): Promise<boolean> {
    const { rows } = await this.#pool.query<{ allowed: boolean; transitions: CircuitTransition[] }>({
      name: "steward.circuit_admit",
      text: "select allowed, transitions from steward.circuit_admit($1)",
      values: [name],
    });
    this.#log(name, rows[0]?.transitions);
    return rows[0]?.allowed === true;
  }

  /** Reports a call's outcome; returns the circuit's new state. */
  async record(name: string, success: boolean, error?: string): Promise<CircuitState> {
    const { rows } = await this.#pool.query<{ state: CircuitState; transitions: CircuitTransition[] }>({
      name: "steward.circuit_report",
      text: "select state, transitions from steward.circuit_report($1, $2, $3)",
      values: [name, success, error ?? null],
    });
    this.#log(name, rows[0]?.transitions);
    return rows[0]!.state;
  }

  /**
   * Runs `work` through the circuit `name`; throws CircuitOpenError when it may not run. `work`
   * gets an AbortSignal that fires when `timeoutMs` passes.
   */
  async withCircuit<T>(
    name: string,
    work: (signal: AbortSignal) => Promise<T>,
    options: WithCircuitOptions = {},
  ): Promise<T> {
    const { timeoutMs } = options;
    if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
      throw new RangeError(`timeoutMs must be a positive number, got ${timeoutMs}`);
    }
    if (!(await this.allow(name))) throw new CircuitOpenError(name);
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let result: T;
    try {
      const running = work(controller.signal);
      result = await (timeoutMs === undefined
        ? running
        : Promise.race([
            running,
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => {
                const timeout = new CircuitTimeoutError(name, timeoutMs);
                controller.abort(timeout);
                reject(timeout);
              }, timeoutMs);
            }),
          ]));
    } catch (error) {
      const timedOut = controller.signal.aborted;
      const failed = timedOut || (options.isFailure ? options.isFailure(error) : true);
      const reported = timedOut ? controller.signal.reason : error;
      await this.#recordQuietly(name, !failed, failed ? messageOf(reported) : undefined);
      throw reported;
    } finally {
      clearTimeout(timer);
    }
    // The work succeeded and its effects stand: a failure to record must not turn it into an error.
    await this.#recordQuietly(name, true);
    return result;
  }

  async #recordQuietly(name: string, success: boolean, error?: string): Promise<void> {
    await this.record(name, success, error).catch((recordError: unknown) => {
      this.#logger?.warn({ err: recordError, circuit: name }, "could not record a call's outcome");
    });
  }

  #log(circuit: string, transitions: CircuitTransition[] | undefined): void {
    for (const { from, to } of transitions ?? []) {
      if (to === "open") this.#logger?.warn({ circuit, from, to }, `circuit ${circuit} opened`);
      else
        this.#logger?.info({ circuit, from, to }, `circuit ${circuit} is ${to === "closed" ? "closed" : "half-open"}`);
    }
  }
}
