// One member of a `steward bench --workers` fleet, run as a child process by bench/fleet.ts:
// `jobs` runs `steward worker` (startWorker, as in production) with a no-op task and reports
// its successes every 100 ms; `drain` waits for "go", drains the invalidation queue through the
// notify sink until it is empty and reports what it delivered. Both exit on "stop".
import { EventEmitter } from "node:events";
import type { WorkerEvents } from "graphile-worker";
import { loadConfig } from "../src/config.ts";
import { createPool } from "../src/database.ts";
import { createLogger } from "../src/logger.ts";
import { drainUntilEmpty, notifySink } from "../src/worker/invalidations.ts";
import { startWorker } from "../src/worker/runner.ts";
import { defineTask } from "../src/worker/task.ts";
import { DRAIN_BATCH, FLEET_TASK, type FleetCommand, type FleetMessage } from "./fleet.ts";

const [mode, url] = process.argv.slice(2) as ["jobs" | "drain", string];
const logger = createLogger("silent", { pretty: false });
const send = (message: FleetMessage) => process.send!(message);
const commands: Array<(command: FleetCommand) => void> = [];
process.on("message", (command: FleetCommand) => commands.forEach((listener) => listener(command)));
const next = (type: FleetCommand["type"]) =>
  new Promise<void>((resolve) => commands.push((command) => command.type === type && resolve()));

if (mode === "jobs") {
  let succeeded = 0;
  const noop = defineTask({
    identifier: FLEET_TASK,
    description: "does nothing",
    parse: () => ({}),
    run: async () => {},
  });
  // Counting from the start: the worker runs jobs while it starts, before startWorker resolves.
  const events = new EventEmitter() as WorkerEvents;
  events.on("job:success", () => succeeded++);
  const worker = await startWorker({
    url,
    config: { ...loadConfig(), healthPort: 0 },
    logger,
    tasks: [noop],
    schedules: [],
    health: false,
    events,
  });
  const report = setInterval(() => send({ type: "succeeded", count: succeeded }), 100);
  send({ type: "ready" });
  await next("stop");
  clearInterval(report);
  await worker.stop("bench fleet round over");
} else {
  const pool = createPool(url, { max: 2, applicationName: "steward bench fleet drain" });
  send({ type: "ready" });
  await next("go");
  const result = await drainUntilEmpty(
    { pool, sinks: [notifySink(pool, "steward_bench")], logger, batchSize: DRAIN_BATCH, visibilityMs: 60_000 },
    600_000,
  );
  send({ type: "drained", delivered: result.delivered });
  await next("stop");
  await pool.end();
}
process.exit(0);
