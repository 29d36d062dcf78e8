// `steward example install|remove|run <name>`: the examples (health-metrics, recall) on the
// database steward manages. install is idempotent; remove undoes what install registered with
// steward and drops the example's schema; run serves an example that is a service (recall)
// until SIGINT/SIGTERM.
import { installHealthMetrics, removeHealthMetrics } from "../../../examples/health-metrics/index.ts";
import { installRecall, removeRecall } from "../../../examples/recall/index.ts";
import { runRecall } from "../../../examples/recall/server.ts";
import { UsageError } from "../../errors.ts";
import { withDatabasePool, type Command } from "../command.ts";

const EXAMPLES = {
  "health-metrics": { schema: "health_metrics", install: installHealthMetrics, remove: removeHealthMetrics },
  recall: { schema: "recall", install: installRecall, remove: removeRecall },
} as const;

type ExampleName = keyof typeof EXAMPLES;

function exampleNamed(name: string | undefined): ExampleName {
  if (name === undefined || !Object.hasOwn(EXAMPLES, name)) {
    throw new UsageError(`unknown example "${name ?? ""}": one of ${Object.keys(EXAMPLES).join(", ")}`);
  }
  return name as ExampleName;
}

export const exampleCommand: Command = {
  name: "example",
  usage:
    "example install|remove|run <name> [--port N]\n" +
    "  install   create (or update) the example's schema and its registrations\n" +
    "  remove    drop them, leaving nothing of the example behind\n" +
    "  run       install if needed and serve it (recall: HTTP on 127.0.0.1, --port, default 8080)",
  options: { port: { type: "string" } },
  positionals: [2, 2],
  async run([action, name], values, context) {
    const example = exampleNamed(name);
    if (action === "run") {
      if (example !== "recall")
        throw new UsageError("only recall is a service to run; health-metrics runs under `steward start`");
      const port = Number(values.port ?? 8080);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new UsageError(`--port must be a port number, got ${String(values.port)}`);
      return withDatabasePool(context, async (_pool, database) => {
        const running = await runRecall({
          url: database.url,
          port,
          channel: context.config.notifyChannel,
          logger: context.logger,
        });
        context.print(`recall service on http://127.0.0.1:${running.port} (Ctrl-C stops it)`);
        await new Promise<void>((resolve) => {
          process.once("SIGINT", resolve);
          process.once("SIGTERM", resolve);
        });
        await running.stop();
        return 0;
      });
    }
    if (action !== "install" && action !== "remove")
      throw new UsageError(`unknown action "${action}": install, remove or run`);
    return withDatabasePool(context, async (pool) => {
      const { schema, install, remove } = EXAMPLES[example];
      if (action === "install") {
        await install(pool);
        context.print(`installed ${example} (schema ${schema})`);
        return 0;
      }
      context.print(
        (await remove(pool)) ? `removed ${example} (schema ${schema} dropped)` : `${example} is not installed`,
      );
      return 0;
    });
  },
};
