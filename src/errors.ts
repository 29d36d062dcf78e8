// Errors that carry a code, so callers branch on `code` rather than on message text.

/** Base class: every error pg-steward raises on purpose. */
export class StewardError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A command line that cannot be run as given: the CLI prints usage and exits 2. */
export class UsageError extends StewardError {
  constructor(message: string) {
    super("USAGE", message);
  }
}

/** A setting (environment variable) with a value we cannot use. */
export class ConfigError extends StewardError {
  constructor(message: string) {
    super("CONFIG", message);
  }
}

/**
 * A job that retrying cannot help (bad payload, unknown entity). The worker moves it to the
 * dead letters after this one attempt; the message should name what was wrong.
 */
export class PermanentError extends StewardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("PERMANENT", message, options);
  }
}

/**
 * Whether `error` is a PermanentError, also one from another copy of pg-steward (a team's task
 * module importing its own installed `pg-steward/worker`): recognised by name and code.
 */
export function isPermanentError(error: unknown): error is PermanentError {
  if (error instanceof PermanentError) return true;
  const candidate = error as { name?: unknown; code?: unknown } | null;
  return error instanceof Error && candidate?.name === "PermanentError" && candidate.code === "PERMANENT";
}

// SQLSTATEs -------------------------------------------------------------------------------------

/** The SQLSTATE of a database error (node-postgres puts it in `code`); undefined for any other error. */
export function sqlstate(error: unknown): string | undefined {
  if (error instanceof StewardError) return undefined;
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/** A bad argument: SQLSTATE class 22 (data exception), as steward's functions raise for bad input. */
export function isBadArgument(error: unknown): boolean {
  return sqlstate(error)?.startsWith("22") ?? false;
}

/** The relation or schema named does not exist (yet): 42P01, 3F000. */
export function isUndefinedRelation(error: unknown): boolean {
  const code = sqlstate(error);
  return code === "42P01" || code === "3F000";
}

/**
 * SQLSTATEs that name something that is not there or cannot be named so: an unknown steward
 * object (P0002, raised by steward's functions), relation, schema or object (42P01, 3F000,
 * 42704), a name that does not parse (42601, 42602).
 */
const NOT_FOUND = new Set(["P0002", "42P01", "3F000", "42704", "42601", "42602"]);

/** Whether retrying cannot help: a bad argument, or a name of something that does not exist. */
export function isPermanentDatabaseError(error: unknown): boolean {
  const code = sqlstate(error);
  return code !== undefined && (code.startsWith("22") || NOT_FOUND.has(code));
}

/**
 * `error` as the PermanentError of `task` when retrying cannot help (the job goes to the dead
 * letters after this attempt), its hint kept; any other error as it is.
 */
export function permanentIfHopeless(task: string, error: unknown): unknown {
  if (!isPermanentDatabaseError(error)) return error;
  const hint = (error as { hint?: string }).hint;
  return new PermanentError(`${task}: ${(error as Error).message}${hint ? ` (hint: ${hint})` : ""}`, { cause: error });
}
