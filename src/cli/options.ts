// Checking command-line options, in one place (task payloads have theirs in worker/payload.ts):
// each function takes the value parseArgs gave, names the option in its error and throws
// UsageError, which the CLI prints with the command's usage before it exits 2.
import { parseDuration } from "../duration.ts";
import { isBadArgument, UsageError } from "../errors.ts";

interface Range {
  min: number;
  max: number;
}

/** An integer from `range`; `fallback` when the option was not given. */
export function integerOption(value: unknown, name: string, range: Range, fallback: number): number;
export function integerOption(value: unknown, name: string, range: Range): number | undefined;
export function integerOption(value: unknown, name: string, range: Range, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < range.min || number > range.max) {
    throw new UsageError(`${name} must be an integer from ${range.min} to ${range.max}, got "${String(value)}"`);
  }
  return number;
}

/** A number from `range`, or undefined when the option was not given. */
export function numberOption(value: unknown, name: string, range: Range): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isFinite(number) || number < range.min || number > range.max) {
    throw new UsageError(`${name} must be a number from ${range.min} to ${range.max}, got "${String(value)}"`);
  }
  return number;
}

/** Milliseconds of a duration with units (30s, 5m, 2h); `fallback` (also a duration) when not given. */
export function durationOption(value: unknown, name: string, fallback: string): number;
export function durationOption(value: unknown, name: string): number | undefined;
export function durationOption(value: unknown, name: string, fallback?: string): number | undefined {
  const text = value === undefined ? fallback : String(value);
  return text === undefined ? undefined : parseDuration(text, name);
}

/** The value of a JSON argument; `name` says which ("the payload", "--keys"). */
export function jsonOption(text: string, name: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${name} is not JSON: ${(error as Error).message}`);
  }
}

/** `text` where a unit is required: a bare number ("30": seconds? days?) is refused. */
export function requireUnit(text: string, name: string, examples: string): string {
  const trimmed = text.trim();
  if (/^[-+]?\d+(\.\d+)?$/.test(trimmed)) {
    throw new UsageError(`${name} needs a unit: "${trimmed}" alone could mean seconds or days (examples: ${examples})`);
  }
  return trimmed;
}

const SINCE_EXAMPLES = "30m, 24h, 7d, 2026-11-30, 2026-11-30T12:00:00Z";

/**
 * A moment, given as a duration back from now with a unit (24h) or as an ISO 8601 date or time
 * (a date alone is midnight UTC); undefined when the option was not given.
 */
export function sinceOption(value: unknown, name: string): Date | undefined {
  if (value === undefined) return undefined;
  const text = requireUnit(String(value), name, SINCE_EXAMPLES);
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const at = new Date(text);
    if (Number.isNaN(at.getTime()))
      throw new UsageError(`${name}: "${text}" is not a date (examples: ${SINCE_EXAMPLES})`);
    return at;
  }
  try {
    return new Date(Date.now() - parseDuration(text, name));
  } catch {
    throw new UsageError(`${name}: "${text}" is neither a duration nor a date (examples: ${SINCE_EXAMPLES})`);
  }
}

/**
 * Runs `work`; a bad-argument error from the database (SQLSTATE class 22, as steward's functions
 * raise for what the option passed them) becomes a UsageError naming the option.
 */
export async function databaseChecksOption<T>(name: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (isBadArgument(error)) throw new UsageError(`${name}: ${(error as Error).message}`);
    throw error;
  }
}
