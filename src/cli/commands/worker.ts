// `steward start` (migrate, then work) and `steward worker` (work; the schema must be current).
import os from "node:os";
import type { RunningExample } from "../../../examples/health-metrics/index.ts";
import { openDatabase } from "../../database.ts";
import type { Logger } from "../../logger.ts";
import { migrate, migrationStatus } from "../../migrate.ts";
import { createPool } from "../../database.ts";
import { crontabPath, readCrontab } from "../../worker/crontab.ts";
import { startWorker, type RunningWorker } from "../../worker/runner.ts";
import { loadTasks } from "../../worker/task-files.ts";
import type { Command, CommandContext } from "../command.ts";

/** Signals within this long after the first are copies of it, not a second request (docs/operations.md, "The worker process"). */
export const SAME_REQUEST_MS = 2000;
/** A forced exit waits at most this long for running jobs to be failed back to the queue. */
const FORCED_EXIT_MS = 3000;

/**
 * One Ctrl-C is one graceful shutdown. A terminal signals its whole foreground process group,
 * so under `npm start` each Ctrl-C reaches us twice at once (from the terminal, and forwarded by
 * npm); a supervisor's `kill -TERM -<pgid>` does the same. Signals within SAME_REQUEST_MS of the
 * first are that one request; one arriving later is a deliberate second request and forces.
 */
function onShutdownSignals(
  logger: Logger,
  handlers: { graceful(signal: NodeJS.Signals): void; force(signal: NodeJS.Signals): void },
) {
  let firstAt: number | undefined;
  const listener = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (firstAt === undefined) {
      firstAt = now;
      logger.info(
        { signal },
        `shutting down gracefully (a second signal ${SAME_REQUEST_MS / 1000} s or more later forces an exit)`,
      );
      handlers.graceful(signal);
    } else if (now - firstAt < SAME_REQUEST_MS) {
      logger.debug({ signal }, "the same shutdown request again (a process group receives one signal more than once)");
    } else {
      logger.warn({ signal }, "forced exit");
      handlers.force(signal);
    }
  };
  // SIGHUP too: the terminal or SSH session that ran it closed. Node's default would exit at
  // once, leaving running jobs locked until the heartbeat timeout.
  process.on("SIGINT", listener);
  process.on("SIGTERM", listener);
  process.on("SIGHUP", listener);
  return {
    requested: () => firstAt !== undefined,
    dispose() {
      process.off("SIGINT", listener);
      process.off("SIGTERM", listener);
      process.off("SIGHUP", listener);
    },
  };
}

async function work(context: CommandContext, options: { migrateFirst: boolean }): Promise<number> {
  const { logger } = context;
  let worker: RunningWorker | undefined;
  let example: RunningExample | undefined;
  // Listening from the start: a Ctrl-C while the server starts or migrations run waits for
  // them, then exits 0 without starting the worker.
  const signals = onShutdownSignals(logger, {
    graceful(signal) {
      void example?.stop();
      void worker?.stop(signal);
    },
    force(signal) {
      // Running jobs are failed back to the queue where the database still answers; the
      // embedded server is stopped by its exit hook.
      const deadline = new Promise((resolve) => setTimeout(resolve, FORCED_EXIT_MS));
      void Promise.race([worker?.runner.kill(), deadline]).finally(() =>
        process.exit(128 + os.constants.signals[signal]),
      );
    },
  });
  try {
    // The team's task modules and crontab before anything else: one that cannot be used stops
    // the worker at once, naming the file (and line), with exit 2 (a ConfigError).
    const tasks = await loadTasks(context.config);
    let crontab = await readCrontab(context.config);
    const database = await openDatabase(context.config, logger, { ownProcessGroup: true });
    try {
      if (signals.requested()) return 0;
      if (options.migrateFirst) {
        await migrate(database.url, logger);
      } else {
        const pool = createPool(database.url, { max: 1 });
        const status = await migrationStatus(pool).finally(() => pool.end());
        if (!status.current) {
          logger.error(status, "the database schema is not at this version of pg-steward: run `steward migrate` first");
          return 1;
        }
      }
      if (signals.requested()) return 0;
      // `start` offers the example (by default on the embedded database only; see STEWARD_EXAMPLE).
      // Imported only here: `steward worker` loads no example code.
      if (options.migrateFirst) {
        const { startExample, EXAMPLE_CRONTAB } = await import("../../../examples/health-metrics/index.ts");
        example = await startExample(database.url, context.config, logger);
        // The example's schedules come from its crontab, as under `steward worker`, unless the
        // team has a crontab of its own.
        if (example && crontabPath(context.config) === undefined) {
          crontab = await readCrontab({ crontabFile: EXAMPLE_CRONTAB });
        }
      }
      worker = await startWorker({ url: database.url, config: context.config, logger, tasks, crontab }).catch(
        async (error: unknown) => {
          await example?.stop();
          throw error;
        },
      );
      if (signals.requested()) {
        void example?.stop();
        void worker.stop("shutdown requested while starting");
      }
      const failure = await worker.done;
      await example?.stop();
      return failure ? 1 : 0;
    } finally {
      await database.release();
    }
  } finally {
    signals.dispose();
  }
}

export const startCommand: Command = {
  name: "start",
  usage: "start",
  positionals: [0, 0],
  run: (_positionals, _values, context) => work(context, { migrateFirst: true }),
};

export const workerCommand: Command = {
  name: "worker",
  usage: "worker",
  positionals: [0, 0],
  run: (_positionals, _values, context) => work(context, { migrateFirst: false }),
};
