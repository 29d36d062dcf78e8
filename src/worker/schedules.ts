// The worker's cron schedules. A task carries its default schedule (TaskDefinition.schedule); a
// DBA changes one with STEWARD_CRON_<TASK> (a cron pattern, or `off`), e.g.
// STEWARD_CRON_VACUUM_TABLES="0 4 * * 0".
import { parseCronItems, type CronItem, type ParsedCronItem } from "graphile-worker";
import { ConfigError } from "../errors.ts";
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
