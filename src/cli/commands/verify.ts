// `steward verify [--json]`: steward.verify_installation() as a checklist, and the migration
// chain against migrations/committed/ (files the database cannot see); exit 1 on any fail.
import { MIGRATIONS_FOLDER } from "../../migrate.ts";
import { checkMigrationChain, describeChainProblems } from "../../migration-chain.ts";
import { withDatabasePool, type Command } from "../command.ts";

interface Check {
  name: string;
  status: "ok" | "warn" | "fail";
  detail: string;
}

const MARKS = { ok: "✓", warn: "!", fail: "✗" } as const;

export const verifyCommand: Command = {
  name: "verify",
  usage: "verify [--json]\n  --json  print the checks as a JSON array of {name, status, detail}",
  options: { json: { type: "boolean" } },
  positionals: [0, 0],
  async run(_positionals, values, context) {
    return withDatabasePool(context, async (pool) => {
      const { rows } = await pool.query<Check>("select name, status, detail from steward.verify_installation()");
      const problems = await checkMigrationChain(pool, MIGRATIONS_FOLDER);
      rows.splice(1, 0, {
        name: "migration chain",
        status: problems.length ? "fail" : "ok",
        detail: problems.length
          ? describeChainProblems(problems).replace("\nNothing was applied.", "").replace(/\n\s*/g, " ")
          : "every applied migration is pg-steward's own, with the hash of migrations/committed/",
      });
      if (values.json) {
        context.print(JSON.stringify(rows, null, 2));
      } else {
        const width = Math.max(...rows.map((row) => row.name.length));
        for (const row of rows) context.print(`${MARKS[row.status]} ${row.name.padEnd(width)}  ${row.detail}`);
        const count = (status: Check["status"]) => rows.filter((row) => row.status === status).length;
        context.print(`\n${count("ok")} ok, ${count("warn")} warnings, ${count("fail")} failed`);
      }
      return rows.some((row) => row.status === "fail") ? 1 : 0;
    });
  },
};
