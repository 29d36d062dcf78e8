// Durations on the command line: "500ms", "30s", "5m", "2h", "7d", or a bare number of seconds.
import { UsageError } from "./errors.ts";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string, what: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(text.trim());
  if (!match) throw new UsageError(`${what}: "${text}" is not a duration (examples: 500ms, 30s, 5m, 2h, 7d)`);
  return Math.round(Number(match[1]) * UNITS[match[2] ?? "s"]!);
}

/** The same duration as a PostgreSQL interval literal. */
export function toInterval(ms: number): string {
  return `${ms} milliseconds`;
}
