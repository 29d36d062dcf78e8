// `steward start` (migrate, then work) and `steward worker` (work; the schema must be current).
import { startExample } from "../../../examples/health-metrics/index.ts";
import { openDatabase } from "../../database.ts";
import { migrate, migrationStatus } from "../../migrate.ts";
import { createPool } from "../../database.ts";
import { startWorker } from "../../worker/runner.ts";
import type { Command, CommandContext } from "../command.ts";

async function work(context: CommandContext, options: { migrateFirst: boolean }): Promise<number> {
  const { logger } = context;
  const database = await openDatabase(context.config, logger);
  try {
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
    // `start` offers the example (by default on the embedded database only; see STEWARD_EXAMPLE).
    const example = options.migrateFirst ? await startExample(database.url, context.config, logger) : undefined;
    const worker = await startWorker({ url: database.url, config: context.config, logger }).catch(
      async (error: unknown) => {
        await example?.stop();
        throw error;
      },
    );
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals++;
      if (signals === 1) {
        logger.info({ signal }, "shutting down (send the signal again to force)");
        void example?.stop();
        void worker.stop(signal);
      } else {
        logger.warn({ signal }, "forced exit");
        void worker.runner.kill().finally(() => process.exit(130));
      }
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const failure = await worker.done;
    await example?.stop();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    return failure ? 1 : 0;
  } finally {
    await database.release();
  }
}

export const startCommand: Command = {
  name: "start",
  summary: "migrate, then run the worker (embedded PostgreSQL when DATABASE_URL is unset)",
  usage: "start",
  positionals: [0, 0],
  run: (_positionals, _values, context) => work(context, { migrateFirst: true }),
};

export const workerCommand: Command = {
  name: "worker",
  summary: "run the worker until SIGTERM/SIGINT, then finish or release running jobs and exit 0",
  usage: "worker",
  positionals: [0, 0],
  run: (_positionals, _values, context) => work(context, { migrateFirst: false }),
};
