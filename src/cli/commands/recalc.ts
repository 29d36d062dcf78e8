// `steward recalc <name> [--all | --keys JSON] [--no-wait] [--timeout D]`: start (or join) a
// recalculation run and follow it to its end, with a progress bar on a terminal.
import { UsageError } from "../../errors.ts";
import {
  currentRun,
  failedBatches,
  followRun,
  hasRunningBatch,
  progressBar,
  progressText,
  recalculationNames,
  runSummary,
  startRecalculation,
  type RecalcRun,
} from "../../worker/recalculation.ts";
import { withDatabasePool, type Command, type CommandContext } from "../command.ts";
import { durationOption, jsonOption } from "../options.ts";

/** With no progress for this long and no batch running, say that no worker seems to be there. */
const IDLE_HINT_MS = 30_000;

function parseKeys(text: string): unknown[] {
  const keys = jsonOption(text, "--keys");
  if (!Array.isArray(keys) || keys.some((key) => key === null)) {
    throw new UsageError(`--keys must be a JSON array of keys, e.g. --keys '[{"user_id": 1, "metric": "steps"}]'`);
  }
  return keys;
}

/** Prints progress: a bar redrawn in place on a terminal, a plain line every few seconds otherwise. */
function progressPrinter(context: CommandContext) {
  let lastSettled = -1;
  let lastPrinted = 0;
  return {
    update(run: RecalcRun) {
      if (context.isTerminal) {
        process.stdout.write(`\r\x1b[2K${progressBar(run)}`);
        return;
      }
      const settled = run.batchesDone + run.batchesFailed;
      if (run.status !== "running" || settled === lastSettled || Date.now() - lastPrinted < 5000) return;
      context.print(progressText(run));
      lastSettled = settled;
      lastPrinted = Date.now();
    },
    end() {
      if (context.isTerminal) process.stdout.write("\n");
    },
  };
}

export const recalcCommand: Command = {
  name: "recalc",
  usage:
    "recalc <name> [--all | --keys JSON] [--no-wait] [--timeout D]\n" +
    "  --all         recalculate every key the recalculation's keys_sql yields\n" +
    "  --keys JSON   recalculate these keys only (a JSON array)\n" +
    "                with neither, follow the run in progress (or show the last one)\n" +
    "  --no-wait     start the run and exit 0 without following it\n" +
    "  --timeout D   stop following after D (e.g. 30m; exit 3; the run goes on)",
  options: {
    all: { type: "boolean" },
    keys: { type: "string" },
    "no-wait": { type: "boolean" },
    timeout: { type: "string" },
  },
  positionals: [1, 1],
  async run([name], values, context) {
    if (values.all && values.keys !== undefined) throw new UsageError("give --all or --keys, not both");
    const keys = values.keys === undefined ? undefined : parseKeys(values.keys as string);
    const timeoutMs = durationOption(values.timeout, "--timeout");
    const starting = Boolean(values.all) || keys !== undefined;
    return withDatabasePool(context, async (pool) => {
      const names = await recalculationNames(pool);
      if (!names.includes(name!)) {
        throw new UsageError(
          `unknown recalculation "${name}"; registered: ${names.length ? names.join(", ") : "(none)"}`,
        );
      }
      let run: RecalcRun | undefined;
      if (starting) {
        const started = await startRecalculation(pool, name!, keys);
        run = started.run;
        context.print(
          started.joined
            ? `joined run ${run.id} of ${name}, in progress since ${run.startedAt.toISOString()}`
            : `started run ${run.id} of ${name}: ${run.keysTotal.toLocaleString("en-US")} keys in ${run.batchesTotal.toLocaleString("en-US")} batches`,
        );
      } else {
        run = await currentRun(pool, name!);
        if (!run) {
          context.print(`${name} has not run yet; start a run with: steward recalc ${name} --all`);
          return 1;
        }
        context.print(
          `${run.status === "running" ? "following" : "last"} run ${run.id} of ${name}, started ${run.startedAt.toISOString()}`,
        );
      }
      if (values["no-wait"]) return 0;

      const printer = progressPrinter(context);
      let lastChange = Date.now();
      let lastSettled = -1;
      let hinted = false;
      const final = await followRun(pool, run.id, {
        intervalMs: context.isTerminal ? 250 : 1000,
        timeoutMs,
        onProgress: (current) => {
          printer.update(current);
          const settled = current.batchesDone + current.batchesFailed;
          if (settled !== lastSettled) {
            lastSettled = settled;
            lastChange = Date.now();
          } else if (!hinted && Date.now() - lastChange > IDLE_HINT_MS) {
            hinted = true;
            void hasRunningBatch(pool, current.id).then((busy) => {
              if (!busy) {
                printer.end();
                context.print("no batch has run for 30 s: is a worker running (steward worker, or npm start)?");
              }
            });
          }
        },
      });
      printer.end();
      if (final.status === "running") {
        context.print(`run ${final.id} still running after ${values.timeout}: ${progressText(final)}`);
        return 3;
      }
      context.print(runSummary(final));
      for (const failed of await failedBatches(pool, final.id)) {
        context.print(`  batch ${failed.batch} (${failed.keys} keys, ${failed.attempts} attempts): ${failed.error}`);
      }
      return final.status === "completed" ? 0 : 1;
    });
  },
};
