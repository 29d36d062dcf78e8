// Every `steward` subcommand, in the order `steward --help` lists them.
import { benchCommand } from "./bench.ts";
import type { Command } from "./command.ts";
import { loadCommand } from "./load.ts";
import { migrateCommand } from "./migrate.ts";
import { recalcCommand } from "./recalc.ts";
import { runCommand } from "./run.ts";
import { startCommand, workerCommand } from "./worker.ts";

export const COMMANDS: Command[] = [
  startCommand,
  migrateCommand,
  workerCommand,
  runCommand,
  recalcCommand,
  benchCommand,
  loadCommand,
];
