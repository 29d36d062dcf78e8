// Checking command-line options, in one place (task payloads have theirs in worker/payload.ts):
// each function takes the value parseArgs gave, names the option in its error and throws
// UsageError, which the CLI prints with the command's usage before it exits 2.
import { parseDuration } from "../duration.ts";
import { UsageError } from "../errors.ts";

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
