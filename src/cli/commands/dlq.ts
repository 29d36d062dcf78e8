// `steward dlq list|show <id>|replay <id>|purge --older-than <interval>`: the dead-letter queue.
import {
  getDeadLetter,
  listDeadLetters,
  purgeDeadLetters,
  replayDeadLetter,
  type DeadLetter,
} from "../../worker/dead-letters.ts";
import { StewardError, UsageError } from "../../errors.ts";
import { withDatabasePool, type Command, type CommandContext } from "../command.ts";
import { databaseChecksOption, integerOption, requireUnit } from "../options.ts";
import { oneLine, textTable, timeCell } from "../text-table.ts";

const ACTIONS = ["list", "show", "replay", "purge"];

function deadLetterId(text: string | undefined, action: string): string {
  if (text === undefined)
    throw new UsageError(`dlq ${action} needs the id of a dead letter (steward dlq list shows them)`);
  if (!/^[1-9][0-9]{0,18}$/.test(text)) throw new UsageError(`dlq ${action}: "${text}" is not a dead letter id`);
  return text;
}

function listTable(rows: DeadLetter[]): string {
  const table = [
    ["id", "failed_at", "source", "task", "attempts", "replayed", "last_error"],
    ...rows.map((row) => [
      row.id,
      timeCell(row.failed_at),
      row.source,
      row.task_identifier ?? "",
      `${row.attempts}/${row.max_attempts}${row.is_permanent ? " permanent" : ""}`,
      row.replayed_as ? `as ${row.replayed_as}` : "",
      oneLine(row.last_error, 80),
    ]),
  ];
  return textTable(table).join("\n");
}

async function list(values: Record<string, unknown>, context: CommandContext): Promise<number> {
  const max = integerOption(values.max, "--max", { min: 1, max: 1000 }, 50);
  const after = values.after as string | undefined;
  return withDatabasePool(context, async (pool) => {
    // The database knows its cursors: one it did not make is a bad argument (exit 2).
    const page = await databaseChecksOption("--after", () => listDeadLetters(pool, { after, max }));
    if (page.rows.length === 0) {
      context.print(after ? "no more dead letters" : "no dead letters");
      return 0;
    }
    context.print(listTable(page.rows));
    if (page.next)
      context.print(`\nnext page: steward dlq list --after ${page.next}${max === 50 ? "" : ` --max ${max}`}`);
    return 0;
  });
}

export const dlqCommand: Command = {
  name: "dlq",
  usage:
    "dlq list [--after CURSOR] [--max N] | show <id> | replay <id> | purge --older-than <interval>\n" +
    "  list                     dead letters, newest first, N a page (default 50); --after pages on\n" +
    "  show <id>                one dead letter in full, its payload and error\n" +
    "  replay <id>              queue it again as a new job (once; audited)\n" +
    "  purge --older-than 30d   delete dead letters that failed longer ago (audited); a PostgreSQL\n" +
    "                           interval with its unit: 30d, 12h, 90m, '2 weeks', 0s (everything)",
  options: {
    after: { type: "string" },
    max: { type: "string" },
    "older-than": { type: "string" },
  },
  positionals: [1, 2],
  async run([action, id], values, context) {
    if (!ACTIONS.includes(action!))
      throw new UsageError(`unknown dlq action "${action}"; actions: ${ACTIONS.join(", ")}`);
    if (action !== "list" && (values.after !== undefined || values.max !== undefined)) {
      throw new UsageError("--after and --max go with dlq list");
    }
    if (action !== "purge" && values["older-than"] !== undefined)
      throw new UsageError("--older-than goes with dlq purge");
    if ((action === "list" || action === "purge") && id !== undefined) {
      throw new UsageError(`dlq ${action} takes no id`);
    }
    switch (action) {
      case "list":
        return list(values, context);
      case "show": {
        const letterId = deadLetterId(id, action);
        return withDatabasePool(context, async (pool) => {
          const letter = await getDeadLetter(pool, letterId);
          if (!letter) throw new StewardError("NOT_FOUND", `dead letter ${letterId} does not exist`);
          const { payload, last_error, ...fields } = letter;
          for (const [name, value] of Object.entries(fields)) {
            if (value === null || value === undefined) continue;
            context.print(
              `${name}: ${value instanceof Date ? value.toISOString() : Array.isArray(value) ? value.join(", ") : String(value)}`,
            );
          }
          context.print(`payload: ${JSON.stringify(payload, null, 2)}`);
          context.print(`last_error: ${last_error ?? ""}`);
          return 0;
        });
      }
      case "replay": {
        const letterId = deadLetterId(id, action);
        return withDatabasePool(context, async (pool) => {
          const newId = await replayDeadLetter(pool, letterId);
          context.print(`replayed dead letter ${letterId} as ${newId}`);
          return 0;
        });
      }
      default: {
        const given = (values["older-than"] as string | undefined)?.trim();
        if (!given) throw new UsageError("dlq purge needs --older-than <interval>, e.g. --older-than 30d");
        // "0" would purge everything and "30" mean 30 seconds: an age needs its unit.
        const olderThan = requireUnit(given, "--older-than", "30d, 12h, 90m, '2 weeks', 0s");
        return withDatabasePool(context, async (pool) => {
          // The interval itself may be wrong (not an interval, negative).
          const purged = await databaseChecksOption("--older-than", () => purgeDeadLetters(pool, olderThan));
          context.print(`purged ${purged} dead letter${purged === 1 ? "" : "s"} older than ${olderThan}`);
          return 0;
        });
      }
    }
  },
};
