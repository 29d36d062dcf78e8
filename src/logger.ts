// One pino logger for the process: JSON lines, or pretty lines when stdout is a terminal.
// graphile-worker and graphile-migrate log through adapters onto the same logger.
import { Logger as GraphileLogger } from "graphile-worker";
import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

export type { Logger };

/**
 * `destination` is a file descriptor: 1 for the long-running commands (journald reads stdout),
 * 2 for commands whose stdout carries their results.
 */
export function createLogger(level: string, options: { pretty?: boolean; destination?: 1 | 2 } = {}): Logger {
  const destination = options.destination ?? 1;
  const usePretty = options.pretty ?? Boolean((destination === 1 ? process.stdout : process.stderr).isTTY);
  if (usePretty) {
    // A synchronous stream: nothing is lost when the process exits right after logging.
    return pino({ level }, pretty({ colorize: true, sync: true, destination, ignore: "pid,hostname" }));
  }
  return pino({ level }, pino.destination({ dest: destination, sync: true }));
}

/** What both graphile Logger classes are built from (`new Logger(factory)`). */
export type LogFunctionFactory = (scope: object) => (level: string, message: string, meta?: object) => void;

/**
 * graphile-worker's and graphile-migrate's log functions, writing to pino. Each wraps them in its
 * own Logger class (they depend on different @graphile/logger versions, whose classes are not
 * interchangeable): `new Logger(logFunctions(logger))`.
 */
export function logFunctions(logger: Logger): LogFunctionFactory {
  return (scope) => {
    const child = logger.child({ source: "graphile", ...scope });
    return (level, message, meta) => {
      // graphile-worker's "worker_id"/"job" scope keys are useful; meta can carry an Error.
      const fields: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(meta ?? {})) {
        // pino serializes an Error only under `err`; elsewhere it would print as {}. The standard
        // serializer keeps the message, stack, cause and an AggregateError's errors.
        fields[key] = value instanceof Error ? pino.stdSerializers.err(value) : value;
      }
      switch (knownShutdownIssue(message, meta) ?? level) {
        case "echo":
          child.debug(fields, message);
          break;
        case "known":
          child.warn(
            { ...fields, upstream: LOCAL_QUEUE_RELEASE_ISSUE },
            "graphile-worker could not hand back the jobs its local queue had fetched; steward unlocks them as the worker unregisters",
          );
          break;
        case "error":
          child.error(fields, message);
          break;
        case "warning":
          child.warn(fields, message);
          break;
        case "info":
          child.info(fields, message);
          break;
        default:
          child.debug(fields, message);
      }
    };
  };
}

const LOCAL_QUEUE_RELEASE_ISSUE = "Cannot background something when the queue is already released";

/**
 * graphile-worker 0.18 stopping with jobs waiting in its local queue cannot return them (the queue
 * is marked released before it schedules their return) and logs the same error six times. The
 * jobs are not lost: steward.unregister_worker unlocks whatever the pool still holds and says how
 * many. So the first report becomes one warning, and its echoes (aggregate errors that carry only
 * it) go to debug. Any other error keeps its level.
 */
function knownShutdownIssue(message: string, meta: object | undefined): "known" | "echo" | undefined {
  if (message.includes(LOCAL_QUEUE_RELEASE_ISSUE)) return "known";
  const error = (meta as { error?: unknown } | undefined)?.error;
  if (
    error instanceof AggregateError &&
    error.errors.length > 0 &&
    error.errors.every((inner) => inner instanceof Error && inner.message === LOCAL_QUEUE_RELEASE_ISSUE)
  ) {
    return "echo";
  }
  return undefined;
}

/** graphile-worker's Logger, writing to pino. */
export function graphileLogger(logger: Logger): GraphileLogger {
  return new GraphileLogger(logFunctions(logger));
}
