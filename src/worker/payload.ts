// Argument checking for task payloads, in one place (pg-boss's attorney.ts is the model).
// Every failure is a PermanentError naming the task and the field: retrying a bad payload
// cannot help, so the job goes to the dead letters after one attempt.
import { PermanentError } from "../errors.ts";

type Payload = Record<string, unknown>;

/** Keys graphile-worker itself adds to payloads (cron adds `_cron`). */
const RESERVED = new Set(["_cron"]);

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "string" ? `"${value}"` : typeof value;
}

/** The payload as an object with only `allowed` keys (plus graphile-worker's own). */
export function payloadObject(task: string, payload: unknown, allowed: readonly string[]): Payload {
  const value = payload ?? {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new PermanentError(`${task}: the payload must be a JSON object, got ${describe(payload)}`);
  }
  const unknown = Object.keys(value).filter((key) => !allowed.includes(key) && !RESERVED.has(key));
  if (unknown.length) {
    throw new PermanentError(
      `${task}: unknown payload field${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => `"${k}"`).join(", ")}` +
        (allowed.length ? `; it takes ${allowed.map((k) => `"${k}"`).join(", ")}` : "; it takes none"),
    );
  }
  return value as Payload;
}

export function requiredString(task: string, payload: Payload, key: string): string {
  const value = payload[key];
  if (typeof value !== "string" || value.trim() === "") {
    throw new PermanentError(`${task}: "${key}" must be a non-empty string, got ${describe(value)}`);
  }
  return value;
}

export function optionalStringArray(task: string, payload: Payload, key: string): string[] | undefined {
  const value = payload[key];
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string" || item.trim() === "")) {
    throw new PermanentError(`${task}: "${key}" must be an array of non-empty strings, got ${describe(value)}`);
  }
  return value as string[];
}

export function optionalInteger(
  task: string,
  payload: Payload,
  key: string,
  range: { min: number; max: number },
): number | undefined {
  const value = payload[key];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < range.min || value > range.max) {
    throw new PermanentError(
      `${task}: "${key}" must be an integer from ${range.min} to ${range.max}, got ${describe(value)}`,
    );
  }
  return value;
}

export function requiredInteger(
  task: string,
  payload: Payload,
  key: string,
  range: { min: number; max: number },
): number {
  const value = optionalInteger(task, payload, key, range);
  if (value === undefined) {
    throw new PermanentError(`${task}: "${key}" is required (an integer from ${range.min} to ${range.max})`);
  }
  return value;
}

/** An array of any JSON values (keys of a recalculation), at most `max` long. */
export function optionalArray(task: string, payload: Payload, key: string, max: number): unknown[] | undefined {
  const value = payload[key];
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length > max || value.some((item) => item === null)) {
    const got = Array.isArray(value)
      ? value.length > max
        ? `${value.length} items`
        : "an array holding null"
      : describe(value);
    throw new PermanentError(`${task}: "${key}" must be an array of at most ${max} non-null JSON values, got ${got}`);
  }
  return value;
}
