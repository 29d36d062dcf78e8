// Durations for people: parsed from the command line ("500ms", "30s", "5m", "2h", "7d", or a bare
// number of seconds) and formatted for output ("4.2s", "42s", "7m05s", "3h07m", "2d03h").
import { UsageError } from "./errors.ts";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string, what: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(text.trim());
  if (!match) throw new UsageError(`${what}: "${text}" is not a duration (examples: 500ms, 30s, 5m, 2h, 7d)`);
  return Math.round(Number(match[1]) * UNITS[match[2] ?? "s"]!);
}

const pad = (value: number) => String(value).padStart(2, "0");

/** `ms` in its two largest units, rounded: tenths of a second below ten seconds, then whole units. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, ms) / 1000;
  if (seconds < 9.95) return `${seconds.toFixed(1)}s`;
  const wholeSeconds = Math.round(seconds);
  if (wholeSeconds < 60) return `${wholeSeconds}s`;
  if (wholeSeconds < 3600) return `${Math.floor(wholeSeconds / 60)}m${pad(wholeSeconds % 60)}s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 48 * 60) return `${Math.floor(minutes / 60)}h${pad(minutes % 60)}m`;
  const hours = Math.round(seconds / 3600);
  return `${Math.floor(hours / 24)}d${pad(hours % 24)}h`;
}
