// `steward run <task> [json-payload] [--wait]`: enqueue a job by hand.
import { TASK_NAMES, TASKS } from "../../../tasks/index.ts";
import { formatDuration } from "../../duration.ts";
import { PermanentError, UsageError } from "../../errors.ts";
import { enqueueJob, waitForJob } from "../../client/jobs.ts";
import { withDatabasePool, type Command } from "../command.ts";
import { durationOption, integerOption, jsonOption } from "../options.ts";

function parsePayload(text: string | undefined): unknown {
  if (text === undefined) return {};
  const payload = jsonOption(text, "the payload");
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw new UsageError('the payload must be a JSON object, e.g. \'{"tables": ["public.orders"]}\'');
  }
  return payload;
}

/**
 * Refuses a payload the task's own check would refuse: enqueued, it would only become a dead
 * letter after one attempt. Tasks this process does not define are checked by their worker.
 */
function checkPayload(task: string, payload: unknown): void {
  const definition = TASKS.find((candidate) => candidate.identifier === task);
  try {
    definition?.parse(payload);
  } catch (error) {
    if (error instanceof PermanentError) throw new UsageError(error.message);
    throw error;
  }
}

export const runCommand: Command = {
  name: "run",
  summary: "enqueue a job; with --wait, wait for its end and exit by its outcome",
  usage:
    "run <task> [json-payload] [--wait] [--timeout 10m] [--max-attempts N]\n" +
    "  --wait            wait until the job completed (exit 0) or failed for good (exit 1)\n" +
    "  --timeout D       how long --wait waits (default 10m; exit 3 when it runs out)\n" +
    "  --max-attempts N  attempts before the job fails for good (default graphile-worker's 25)",
  options: {
    wait: { type: "boolean" },
    timeout: { type: "string" },
    "max-attempts": { type: "string" },
  },
  positionals: [1, 2],
  async run([task, payloadText], values, context) {
    const payload = parsePayload(payloadText);
    if (!TASK_NAMES.includes(task!)) {
      throw new UsageError(
        `unknown task "${task}"; tasks: ${TASK_NAMES.length ? TASK_NAMES.join(", ") : "(none registered)"}`,
      );
    }
    checkPayload(task!, payload);
    const timeoutMs = durationOption(values.timeout, "--timeout", "10m");
    const maxAttempts = integerOption(values["max-attempts"], "--max-attempts", { min: 1, max: 32767 });
    return withDatabasePool(context, async (pool) => {
      const id = await enqueueJob(pool, task!, payload, { maxAttempts });
      context.print(`enqueued ${task} as job ${id}`);
      if (!values.wait) return 0;
      const outcome = await waitForJob(pool, id, {
        timeoutMs,
        onProgress: (state) => {
          if (state.state === "pending" && state.lastError) {
            context.print(`attempt ${state.attempts}/${state.maxAttempts} failed: ${state.lastError}`);
          }
        },
      });
      switch (outcome.state) {
        case "completed":
          context.print(`job ${id} completed`);
          return 0;
        case "failed":
          context.print(
            `job ${id} failed for good after ${outcome.attempts} attempt${outcome.attempts === 1 ? "" : "s"}: ${outcome.error}` +
              (outcome.deadLetterId
                ? `\nit is dead letter ${outcome.deadLetterId}: steward dlq show ${outcome.deadLetterId}`
                : ""),
          );
          return 1;
        default:
          context.print(`job ${id} still ${outcome.running ? "running" : "queued"} after ${formatDuration(timeoutMs)}`);
          return 3;
      }
    });
  },
};
