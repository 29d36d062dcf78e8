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
