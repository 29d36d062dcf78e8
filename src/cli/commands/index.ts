// Every `steward` subcommand, in the order `steward --help` lists them. A command's code is
// imported only when it runs: `steward --help` loads none, and `steward worker` no bench, load
// or example code.
import type { Command } from "../command.ts";

export interface CommandEntry {
  name: string;
  /** One line for the command list. */
  summary: string;
  load(): Promise<Command>;
}

export const COMMANDS: CommandEntry[] = [
  {
    name: "start",
    summary: "migrate, then run the worker (embedded PostgreSQL when DATABASE_URL is unset)",
    load: async () => (await import("./worker.ts")).startCommand,
  },
  {
    name: "migrate",
    summary: "install or upgrade graphile-worker's schema, then pg-steward's migrations",
    load: async () => (await import("./migrate.ts")).migrateCommand,
  },
  {
    name: "worker",
    summary: "run the worker until SIGTERM, SIGINT or SIGHUP, then finish or release running jobs and exit 0",
    load: async () => (await import("./worker.ts")).workerCommand,
  },
  {
    name: "run",
    summary: "enqueue a job; with --wait, wait for its end and exit by its outcome",
    load: async () => (await import("./run.ts")).runCommand,
  },
  {
    name: "dlq",
    summary: "the dead-letter queue: list, show, replay or purge jobs that failed for good",
    load: async () => (await import("./dlq.ts")).dlqCommand,
  },
  {
    name: "recalc",
    summary: "start (or join) a recalculation run and follow it; exit 0 when it completed, 1 when it failed",
    load: async () => (await import("./recalc.ts")).recalcCommand,
  },
  {
    name: "status",
    summary: "queue depths, running jobs, workers, dead letters, invalidations, views, circuits, vacuum",
    load: async () => (await import("./status.ts")).statusCommand,
  },
  {
    name: "verify",
    summary: "check that everything is in place (schema, triggers, indexes, privileges); exit 1 on any failure",
    load: async () => (await import("./verify.ts")).verifyCommand,
  },
  {
    name: "audit",
    summary: "the audit log: who replayed, purged, registered, changed or ran what, newest first",
    load: async () => (await import("./audit.ts")).auditCommand,
  },
  {
    name: "uninstall",
    summary: "remove pg-steward from the database, after printing what goes and what stays (--yes to do it)",
    load: async () => (await import("./uninstall.ts")).uninstallCommand,
  },
  {
    name: "bench",
    summary: "run the benchmark suite: ours against a baseline, side by side in one run",
    load: async () => (await import("./bench.ts")).benchCommand,
  },
  {
    name: "load",
    summary: "the pre-launch load test: simulated users on the client functions while a worker drains and refreshes",
    load: async () => (await import("./load.ts")).loadCommand,
  },
  {
    name: "example",
    summary: "install, remove or run an example (health-metrics, recall) on the database",
    load: async () => (await import("./example.ts")).exampleCommand,
  },
];
