import { migrate } from "../../migrate.ts";
import { withDatabasePool, type Command } from "../command.ts";

export const migrateCommand: Command = {
  name: "migrate",
  usage: "migrate",
  positionals: [0, 0],
  async run(_positionals, _values, context) {
    return withDatabasePool(context, async (_pool, database) => {
      const status = await migrate(database.url, context.logger);
      context.print(`migrated: steward ${status.lastApplied}, graphile_worker ${status.workerSchema}`);
      return 0;
    });
  },
};
