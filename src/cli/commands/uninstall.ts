// `steward uninstall [--yes]`: removes pg-steward from the database in one transaction, after
// printing what goes and what stays (steward.uninstall_plan). Refuses while a worker is alive
// or while objects of other schemas depend on steward's; without --yes it only prints.
import fs from "node:fs/promises";
import path from "node:path";
import type pg from "pg";
import { TASKS } from "../../../tasks/index.ts";
import { withTransaction } from "../../database.ts";
import { sqlstate } from "../../errors.ts";
import { MIGRATIONS_FOLDER } from "../../migrate.ts";
import { withDatabasePool, type Command, type CommandContext } from "../command.ts";

interface Step {
  step: number;
  action: "blocker" | "remove" | "remove if unused" | "keep";
  object: string;
  statement: string | null;
}

/** Exit codes, in the usage text and the README. */
const EXIT = { removed: 0, refused: 1, printedOnly: 3 } as const;

/** How long the uninstall waits for a lock (a session using a steward table) before giving up. */
const LOCK_TIMEOUT = "10s";

/** `filename hash` of each of pg-steward's committed migrations, as graphile_migrate records them. */
async function ourMigrations(): Promise<Set<string>> {
  const folder = path.join(MIGRATIONS_FOLDER, "committed");
  const records = new Set<string>();
  for (const file of await fs.readdir(folder)) {
    const number = /^(\d{6})(-.*)?\.sql$/.exec(file)?.[1];
    const hash = /^--! Hash: (\S+)$/m.exec(await fs.readFile(path.join(folder, file), "utf8"))?.[1];
    if (number && hash) records.add(`${number}.sql ${hash}`);
  }
  return records;
}

/**
 * graphile-migrate's record of applied migrations: dropped when it records only pg-steward's (so
 * a later `steward migrate` installs afresh), kept when it records a team's own migrations too.
 */
async function migrationRecordStep(client: pg.PoolClient, next: number): Promise<Step | undefined> {
  const { rows: present } = await client.query<{ present: boolean }>(
    "select to_regclass('graphile_migrate.migrations') is not null as present",
  );
  if (!present[0]!.present) return undefined;
  const { rows } = await client.query<{ record: string }>(
    "select filename || ' ' || hash as record from graphile_migrate.migrations order by filename",
  );
  const ours = await ourMigrations();
  const others = rows.map((row) => row.record).filter((record) => !ours.has(record));
  if (others.length === 0) {
    return {
      step: next,
      action: "remove",
      object: `schema graphile_migrate: the record of pg-steward's ${rows.length} applied migrations, so a later \`steward migrate\` installs afresh`,
      statement: "drop schema graphile_migrate cascade",
    };
  }
  return {
    step: next,
    action: "keep",
    object:
      `schema graphile_migrate: it also records ${others.length} migration(s) that are not pg-steward's ` +
      `(${others.map((record) => record.split(" ")[0]).join(", ")}); before installing pg-steward here again, ` +
      "delete its rows (those of pg-steward's migrations/committed/) from graphile_migrate.migrations",
    statement: null,
  };
}

async function plan(client: pg.PoolClient): Promise<Step[]> {
  const { rows } = await client.query<Step>(
    "select step, action, object, statement from steward.uninstall_plan($1::text[]) order by step",
    [TASKS.map((task) => task.identifier)],
  );
  const record = await migrationRecordStep(client, rows.length + 1);
  if (!record) return rows;
  // Removals run before what is merely kept is listed.
  const firstKept = rows.findIndex((row) => row.action === "keep");
  return record.action === "keep" || firstKept === -1
    ? [...rows, record]
    : [...rows.slice(0, firstKept), record, ...rows.slice(firstKept)];
}

function printPlan(steps: Step[], database: string, context: CommandContext): void {
  const section = (title: string, actions: Step["action"][]) => {
    const chosen = steps.filter((step) => actions.includes(step.action));
    if (chosen.length === 0) return;
    context.print(`\n${title}`);
    for (const step of chosen) context.print(`  - ${step.object}`);
  };
  context.print(`steward uninstall: pg-steward in database ${database}`);
  section("Refused, because:", ["blocker"]);
  section("Removes, in one transaction:", ["remove", "remove if unused"]);
  section("Keeps:", ["keep"]);
}

/** Drops the role unless another database still uses it or this role may not drop roles. */
async function dropRoleIfUnused(client: pg.PoolClient, statement: string): Promise<string> {
  await client.query("savepoint drop_role");
  try {
    await client.query(statement);
    await client.query("release savepoint drop_role");
    return "dropped role steward_client";
  } catch (error) {
    await client.query("rollback to savepoint drop_role");
    // 2BP01: privileges or objects in another database; 42501: may not drop roles.
    if (sqlstate(error) !== "2BP01" && sqlstate(error) !== "42501") throw error;
    const detail = (error as { detail?: string }).detail;
    return `kept role steward_client: ${(error as Error).message}${detail ? ` (${detail.replace(/\s+/g, " ")})` : ""}`;
  }
}

export const uninstallCommand: Command = {
  name: "uninstall",
  usage:
    "uninstall [--yes]\n" +
    "  --yes  remove it; without --yes it prints what it would remove and removes nothing\n" +
    "Exit 0: removed (or not installed); 1: refused (a steward worker is alive, or objects of yours\n" +
    "depend on steward objects) or failed, nothing changed; 2: bad arguments; 3: printed only (no --yes).\n" +
    'Back up first: pg_dump -Fc -f before-uninstall.dump "$DATABASE_URL"',
  options: { yes: { type: "boolean" } },
  positionals: [0, 0],
  async run(_positionals, values, context) {
    return withDatabasePool(context, async (pool) => {
      const { rows } = await pool.query<{ database: string; installed: boolean; plannable: boolean }>(
        `select current_database() as database, to_regnamespace('steward') is not null as installed,
                to_regprocedure('steward.uninstall_plan(text[])') is not null as plannable`,
      );
      const { database, installed, plannable } = rows[0]!;
      if (!installed) {
        context.print(`pg-steward is not installed in database ${database} (no schema steward): nothing to remove`);
        return EXIT.removed;
      }
      if (!plannable) {
        throw new Error(
          `pg-steward in database ${database} predates steward uninstall: run \`steward migrate\` with this version first`,
        );
      }
      return withTransaction(pool, async (client) => {
        await client.query("select set_config('lock_timeout', $1, true)", [LOCK_TIMEOUT]);
        if (values.yes) {
          // No worker may register or beat between the check below and the drop.
          await client.query("lock table steward.workers in share row exclusive mode");
        }
        const steps = await plan(client);
        printPlan(steps, database, context);
        if (steps.some((step) => step.action === "blocker")) {
          context.print("\nnothing removed");
          return EXIT.refused;
        }
        if (!values.yes) {
          context.print(
            '\nnothing removed: back up first (pg_dump -Fc -f before-uninstall.dump "$DATABASE_URL"), ' +
              "then run `steward uninstall --yes`",
          );
          return EXIT.printedOnly;
        }
        const outcomes: string[] = [];
        try {
          for (const step of steps) {
            if (step.statement === null) continue;
            if (step.action === "remove if unused") outcomes.push(await dropRoleIfUnused(client, step.statement));
            else await client.query(step.statement);
          }
        } catch (error) {
          if (sqlstate(error) !== "55P03") throw error;
          throw new Error(
            `could not lock pg-steward's tables within ${LOCK_TIMEOUT}: sessions are using them (applications calling ` +
              "steward functions, psql); nothing removed. Stop them and try again",
            { cause: error },
          );
        }
        context.print(`\nremoved pg-steward from database ${database}`);
        for (const outcome of outcomes) context.print(outcome);
        context.logger.info({ database, steps: steps.length }, "pg-steward uninstalled");
        return EXIT.removed;
      });
    });
  },
};
