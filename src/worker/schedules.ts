// The worker's cron schedules. A task carries its default schedule (TaskDefinition.schedule); a
// DBA changes one with STEWARD_CRON_<TASK> (a cron pattern, or `off`), e.g.
// STEWARD_CRON_VACUUM_TABLES="0 4 * * 0", or replaces it with a crontab line whose identifier is
// the task's name. The team's crontab adds its own lines (crontab.ts).
import { parseCronItems, type CronItem, type ParsedCronItem } from "graphile-worker";
import { ConfigError } from "../errors.ts";
import type { CrontabEntry } from "./crontab.ts";
import type { TaskDefinition } from "./task.ts";

export interface Schedule {
  task: string;
  /** Default cron pattern (minute hour day-of-month month day-of-week, UTC). */
  pattern: string;
  description: string;
  payload?: Record<string, unknown>;
}

/** The schedules the given tasks carry. */
export function schedulesOf(tasks: TaskDefinition<unknown>[]): Schedule[] {
  return tasks.flatMap((task) => (task.schedule ? [{ task: task.identifier, ...task.schedule }] : []));
}

function scheduleVariable(task: string): string {
  return `STEWARD_CRON_${task.toUpperCase()}`;
}

export interface EffectiveSchedule extends Schedule {
  /** Where the pattern came from. */
  source: "default" | "environment";
  enabled: boolean;
}

/** The schedules with environment overrides applied. */
export function effectiveSchedules(
  schedules: Schedule[],
  env: Record<string, string | undefined> = process.env,
): EffectiveSchedule[] {
  return schedules.map((schedule) => {
    const override = env[scheduleVariable(schedule.task)]?.trim();
    if (!override) return { ...schedule, source: "default", enabled: true };
    if (override.toLowerCase() === "off") return { ...schedule, source: "environment", enabled: false };
    return { ...schedule, pattern: override, source: "environment", enabled: true };
  });
}

/**
 * graphile-worker cron items. Each schedule's job has a job key, so a run that is still queued
 * is replaced rather than joined by a second copy when the next tick comes.
 */
export function cronItems(schedules: EffectiveSchedule[]): ParsedCronItem[] {
  const items: CronItem[] = schedules
    .filter((schedule) => schedule.enabled)
    .map((schedule) => ({
      task: schedule.task,
      match: schedule.pattern,
      identifier: `steward:${schedule.task}`,
      payload: schedule.payload,
      options: { backfillPeriod: 0, jobKey: `steward:cron:${schedule.task}`, jobKeyMode: "replace" as const },
    }));
  const parsed: ParsedCronItem[] = [];
  for (const item of items) {
    try {
      parsed.push(...parseCronItems([item]));
    } catch (error) {
      throw new ConfigError(
        `${scheduleVariable(item.task)}: "${String(item.match)}" is not a cron pattern (${(error as Error).message}); ` +
          `use five fields like "*/5 * * * *", or "off"`,
      );
    }
  }
  return parsed;
}

/** One schedule the worker runs, wherever it came from. */
export interface PlannedSchedule {
  /** graphile-worker's cron identifier (`steward:<task>` for a built-in default). */
  identifier: string;
  task: string;
  pattern: string;
  payload: Record<string, unknown> | null;
  /** `default`, the STEWARD_CRON_ variable, or the crontab file and line. */
  source: string;
  item: ParsedCronItem;
}

/**
 * The built-in schedules (with STEWARD_CRON_<TASK> applied) merged with the crontab's lines. A
 * line whose identifier is a built-in task's name replaces that task's default; setting
 * STEWARD_CRON_<TASK> as well is refused, since one of the two would be silently ignored.
 */
export function planSchedules(
  builtins: Schedule[],
  crontab: CrontabEntry[],
  crontabFile = "crontab",
  env: Record<string, string | undefined> = process.env,
): PlannedSchedule[] {
  const planned: PlannedSchedule[] = [];
  for (const schedule of effectiveSchedules(builtins, env)) {
    const replacement = crontab.find((entry) => entry.item.identifier === schedule.task);
    if (replacement) {
      if (schedule.source === "environment") {
        throw new ConfigError(
          `${scheduleVariable(schedule.task)} and line ${replacement.line} of ${crontabFile} both schedule ${schedule.task}; keep one of the two`,
        );
      }
      continue;
    }
    const [item] = cronItems([schedule]);
    if (!item) continue;
    planned.push({
      identifier: item.identifier,
      task: schedule.task,
      pattern: schedule.pattern,
      payload: schedule.payload ?? null,
      source: schedule.source === "environment" ? scheduleVariable(schedule.task) : "default",
      item,
    });
  }
  for (const { line, pattern, item } of crontab) {
    planned.push({
      identifier: item.identifier,
      task: item.task,
      pattern,
      payload: item.payload,
      source: `${crontabFile}:${line}`,
      item,
    });
  }
  return planned;
}
