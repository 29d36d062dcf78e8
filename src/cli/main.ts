// `steward <command>`: exit 0 on success, 1 on failure, 2 on bad arguments (with usage).
import { parseArgs } from "node:util";
import { COMMANDS, type CommandEntry } from "./commands/index.ts";
import type { Command, CommandContext } from "./command.ts";
import { loadConfig } from "../config.ts";
import { ConfigError, UsageError } from "../errors.ts";

/** Commands that run for long and log as their main output (to stdout, for journald). */
const DAEMONS = new Set(["start", "worker"]);

function usage(command?: Command): string {
  if (command) {
    const summary = COMMANDS.find((entry) => entry.name === command.name)?.summary ?? "";
    return `usage: steward ${command.usage}\n\n${summary}\n`;
  }
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "usage: steward <command> [arguments]",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "steward <command> --help shows a command's arguments. Configuration is read from the",
    "environment (DATABASE_URL, STEWARD_*, LOG_LEVEL); see docs/configuration.md.",
    "",
  ].join("\n");
}

/** A database error's message with its detail and hint, which carry the fix. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const pgError = error as Error & { detail?: string; hint?: string; code?: string };
  return [
    pgError.message,
    pgError.detail ? `detail: ${pgError.detail}` : "",
    pgError.hint ? `hint: ${pgError.hint}` : "",
  ]
    .filter(Boolean)
    .join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    const topic = COMMANDS.find((c) => c.name === rest[0]);
    process.stdout.write(usage(await topic?.load()));
    return name === undefined ? 2 : 0;
  }
  const entry: CommandEntry | undefined = COMMANDS.find((c) => c.name === name);
  if (!entry) {
    process.stderr.write(`steward: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  const command = await entry.load();
  let positionals: string[];
  let values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  try {
    ({ positionals, values } = parseArgs({
      args: rest,
      options: { ...command.options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`steward ${name}: ${(error as Error).message}\n\n${usage(command)}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(usage(command));
    return 0;
  }
  const [min, max] = command.positionals ?? [0, Infinity];
  if (positionals.length < min || positionals.length > max) {
    const expected = min === max ? `${min}` : `${min} to ${max}`;
    process.stderr.write(
      `steward ${name}: expected ${expected} argument${max === 1 ? "" : "s"}, got ${positionals.length}\n\n${usage(command)}`,
    );
    return 2;
  }

  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`steward: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const daemon = DAEMONS.has(name);
  // Imported here: `steward --help` and bad arguments load no logger.
  const { createLogger } = await import("../logger.ts");
  const logger = createLogger(config.logLevel, { destination: daemon ? 1 : 2 });
  const context: CommandContext = {
    config,
    logger,
    print: (line) => process.stdout.write(line + "\n"),
    isTerminal: Boolean(process.stdout.isTTY),
  };
  try {
    return await command.run(positionals, values, context);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`steward ${name}: ${error.message}\n\n${usage(command)}`);
      return 2;
    }
    // A setting, task module or crontab line it cannot use: the message names it; usage would not help.
    if (error instanceof ConfigError) {
      process.stderr.write(`steward ${name}: ${error.message}\n`);
      return 2;
    }
    logger.debug({ err: error }, "command failed");
    process.stderr.write(`steward ${name}: ${describeError(error)}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
process.exit(code);
