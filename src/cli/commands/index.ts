// Every `steward` subcommand, in the order `steward --help` lists them.
import { auditCommand } from "./audit.ts";
import { benchCommand } from "./bench.ts";
import type { Command } from "../command.ts";
import { dlqCommand } from "./dlq.ts";
import { exampleCommand } from "./example.ts";
import { loadCommand } from "./load.ts";
import { migrateCommand } from "./migrate.ts";
import { recalcCommand } from "./recalc.ts";
import { runCommand } from "./run.ts";
import { statusCommand } from "./status.ts";
import { uninstallCommand } from "./uninstall.ts";
import { verifyCommand } from "./verify.ts";
import { startCommand, workerCommand } from "./worker.ts";

export const COMMANDS: Command[] = [
  startCommand,
  migrateCommand,
  workerCommand,
  runCommand,
  dlqCommand,
  recalcCommand,
  statusCommand,
  verifyCommand,
  auditCommand,
  uninstallCommand,
  benchCommand,
  loadCommand,
  exampleCommand,
];
