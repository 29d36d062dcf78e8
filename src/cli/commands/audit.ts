// `steward audit [--since D] [--action A] [--actor X] [--request-id R] [--max N] [--json]`: the
// audit log, newest first, read through steward.audit_entries.
import type pg from "pg";
import { withDatabasePool, type Command } from "../command.ts";
import { integerOption, sinceOption } from "../options.ts";
import { oneLine, textTable, timeCell } from "../text-table.ts";

interface AuditEntry {
  id: string;
  at: Date;
  actor: string;
  claimed_actor: string | null;
  current_user_name: string;
  action: string;
  target: string | null;
  detail: Record<string, unknown>;
  request_id: string | null;
}

interface AuditFilter {
  since?: Date;
  action?: string;
  actor?: string;
  requestId?: string;
  max: number;
}

async function auditEntries(pool: pg.Pool, filter: AuditFilter): Promise<AuditEntry[]> {
  const { rows } = await pool.query<AuditEntry>(
    `select id::text, at, actor, claimed_actor, current_user_name, action, target, detail, request_id
       from steward.audit_entries(since => $1, only_action => $2, only_actor => $3, only_request_id => $4, max => $5)`,
    [filter.since ?? null, filter.action ?? null, filter.actor ?? null, filter.requestId ?? null, filter.max],
  );
  return rows;
}

/** Who acted, as one cell: the session user, the claim beside it when there is one. */
function actorCell(entry: AuditEntry): string {
  const role = entry.current_user_name === entry.actor ? entry.actor : `${entry.actor} as ${entry.current_user_name}`;
  return entry.claimed_actor ? `${role} (${entry.claimed_actor})` : role;
}

export const auditCommand: Command = {
  name: "audit",
  usage:
    "audit [--since D] [--action A] [--actor X] [--request-id R] [--max N] [--json]\n" +
    "  --since D         only entries since a duration ago (30m, 24h, 7d) or a date or time\n" +
    "                    (2026-11-30, 2026-11-30T12:00:00Z; a date alone is midnight UTC)\n" +
    "  --action A        only this action (set_setting, replay_dead_letter, run, ...)\n" +
    "  --actor X         only entries by this role (the session user) or this claimed actor (cli:alice)\n" +
    "  --request-id R    only entries of the request that set steward.request_id = R\n" +
    "  --max N           at most N entries (default 100, at most 10000)\n" +
    "  --json            print a JSON array of the entries",
  options: {
    since: { type: "string" },
    action: { type: "string" },
    actor: { type: "string" },
    "request-id": { type: "string" },
    max: { type: "string" },
    json: { type: "boolean" },
  },
  positionals: [0, 0],
  async run(_positionals, values, context) {
    const filter: AuditFilter = {
      since: sinceOption(values.since, "--since"),
      action: values.action as string | undefined,
      actor: values.actor as string | undefined,
      requestId: values["request-id"] as string | undefined,
      max: integerOption(values.max, "--max", { min: 1, max: 10_000 }, 100),
    };
    return withDatabasePool(context, async (pool) => {
      const entries = await auditEntries(pool, filter);
      if (values.json) {
        context.print(JSON.stringify(entries, null, 2));
        return 0;
      }
      if (entries.length === 0) {
        context.print("no audit entries");
        return 0;
      }
      const table = [
        ["at", "actor", "action", "target", "request_id", "detail"],
        ...entries.map((entry) => [
          timeCell(entry.at),
          actorCell(entry),
          entry.action,
          oneLine(entry.target, 40),
          entry.request_id ?? "",
          oneLine(JSON.stringify(entry.detail), 80),
        ]),
      ];
      context.print(textTable(table).join("\n"));
      if (entries.length === filter.max) context.print(`\n(the newest ${filter.max}; --max or --since for others)`);
      return 0;
    });
  },
};
