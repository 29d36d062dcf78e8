// The team's crontab: graphile-worker's syntax (`0 * * * * task ?id=x&max=3 {"payload": 1}`),
// read from STEWARD_CRONTAB (default `./crontab`). A line that cannot be used stops the worker
// with its line number; so does a line for a task the worker does not run, or whose payload
// that task's own check refuses (it would only ever make dead letters).
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { parseCrontab, type ParsedCronItem, type TimestampDigest } from "graphile-worker";
import type { Config } from "../config.ts";
import { ConfigError, isPermanentError } from "../errors.ts";
import type { TaskDefinition } from "./task.ts";

export interface CrontabEntry {
  /** 1-based line of the file. */
  line: number;
  /** The five time fields as written. */
  pattern: string;
  item: ParsedCronItem;
}

/** A crontab that cannot be used: the worker stops with exit 2. */
export class CrontabError extends ConfigError {}

/** Whether a line holds an entry (graphile-worker's own rule: not blank, not a `#` comment). */
function isEntry(line: string): boolean {
  const trimmed = line.trim();
  return trimmed !== "" && !trimmed.startsWith("#");
}

/** Parses crontab text; `file` names it in errors. */
export function parseCrontabText(text: string, file: string): CrontabEntry[] {
  const lines = text.split(/\r?\n/);
  const entries: CrontabEntry[] = [];
  const byIdentifier = new Map<string, number>();
  lines.forEach((raw, index) => {
    if (!isEntry(raw)) return;
    const line = index + 1;
    let item: ParsedCronItem;
    try {
      // Parsed on its own, padded so graphile-worker's messages carry the real line number.
      [item] = parseCrontab("\n".repeat(index) + raw.trim()) as [ParsedCronItem];
    } catch (error) {
      throw new CrontabError(`${file}: ${(error as Error).message}`);
    }
    const earlier = byIdentifier.get(item.identifier);
    if (earlier !== undefined) {
      throw new CrontabError(
        `${file}: line ${line} schedules "${item.identifier}" again (line ${earlier} did first); give one of them ?id=<another name>`,
      );
    }
    if (item.identifier.startsWith("steward:")) {
      throw new CrontabError(`${file}: line ${line}: identifiers starting with "steward:" are pg-steward's own`);
    }
    byIdentifier.set(item.identifier, line);
    entries.push({ line, pattern: raw.trim().split(/\s+/).slice(0, 5).join(" "), item });
  });
  return entries;
}

/**
 * The crontab file: STEWARD_CRONTAB (which must exist), else `./crontab` when present, else none.
 */
export function crontabPath(config: Pick<Config, "crontabFile">, cwd = process.cwd()): string | undefined {
  if (config.crontabFile) return config.crontabFile;
  const candidate = path.resolve(cwd, "crontab");
  return existsSync(candidate) ? candidate : undefined;
}

export async function readCrontab(config: Pick<Config, "crontabFile">): Promise<CrontabEntry[]> {
  const file = crontabPath(config);
  if (!file) return [];
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (error) {
    throw new CrontabError(`STEWARD_CRONTAB ${file} cannot be read: ${(error as Error).message}`);
  }
  return parseCrontabText(text, file);
}

/** Refuses lines for tasks not in `tasks`, and payloads their task's check refuses. */
export function checkCrontabTasks(entries: CrontabEntry[], tasks: TaskDefinition<unknown>[], file: string): void {
  for (const { line, item } of entries) {
    const task = tasks.find((candidate) => candidate.identifier === item.task);
    if (!task) {
      throw new CrontabError(
        `${file}: line ${line} schedules task "${item.task}", which this worker does not run; tasks: ${tasks.map((t) => t.identifier).join(", ")} (a team's task is a module in STEWARD_TASKS_DIR)`,
      );
    }
    try {
      task.parse({ ...item.payload, _cron: { ts: new Date().toISOString(), backfilled: false } });
    } catch (error) {
      if (isPermanentError(error)) throw new CrontabError(`${file}: line ${line}: ${error.message}`);
      throw error;
    }
  }
}

function digest(at: Date): TimestampDigest {
  return {
    min: at.getUTCMinutes(),
    hour: at.getUTCHours(),
    date: at.getUTCDate(),
    month: at.getUTCMonth() + 1,
    dow: at.getUTCDay(),
  };
}

/** The next minute after `from` the item matches (UTC, as graphile-worker runs it), within a year. */
export function nextRun(item: ParsedCronItem, from = new Date()): Date | undefined {
  const at = new Date(from);
  at.setUTCSeconds(0, 0);
  for (let minute = 0; minute < 366 * 24 * 60; minute++) {
    at.setUTCMinutes(at.getUTCMinutes() + 1);
    if (item.match(digest(at))) return at;
  }
  return undefined;
}
