// `steward run <task> [json-payload] [--wait]`: enqueue a job by hand.
import { formatDuration } from "../../duration.ts";
import { isPermanentError, UsageError } from "../../errors.ts";
import { enqueueJob, waitForJob } from "../../client/jobs.ts";
import type { TaskDefinition } from "../../worker/task.ts";
import { loadTasks } from "../../worker/task-files.ts";
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
function checkPayload(definition: TaskDefinition<unknown> | undefined, payload: unknown): void {
  try {
    definition?.parse(payload);
  } catch (error) {
    if (isPermanentError(error)) throw new UsageError(error.message);
    throw error;
  }
}

export const runCommand: Command = {
  name: "run",
  usage:
    "run <task> [json-payload] [--wait] [--timeout 10m] [--max-attempts N] [--any-task]\n" +
    "  --wait            wait until the job completed (exit 0) or failed for good (exit 1)\n" +
    "  --timeout D       how long --wait waits (default 10m; exit 3 when it runs out)\n" +
    "  --max-attempts N  attempts before the job fails for good (default graphile-worker's 25)\n" +
    "  --any-task        enqueue a task this installation does not define (another fleet of workers runs it)",
  options: {
    wait: { type: "boolean" },
    timeout: { type: "string" },
    "max-attempts": { type: "string" },
    "any-task": { type: "boolean" },
  },
  positionals: [1, 2],
  async run([task, payloadText], values, context) {
    const payload = parsePayload(payloadText);
    // The built-ins and the team's task modules (STEWARD_TASKS_DIR), as the worker would find them.
    const tasks = await loadTasks(context.config);
    const definition = tasks.find((candidate) => candidate.identifier === task);
    if (!definition && !values["any-task"]) {
      throw new UsageError(
        `unknown task "${task}": no worker started here would run it, and the job would wait forever; tasks: ${tasks.map((t) => t.identifier).join(", ")}. ` +
          "Add a module to STEWARD_TASKS_DIR, or pass --any-task if another fleet of workers runs it",
      );
    }
    checkPayload(definition, payload);
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
