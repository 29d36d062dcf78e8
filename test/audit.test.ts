import { describe, expect, it } from "vitest";
import { createTestRole, runCli, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

/** A dead letter of a job, as the trigger would leave one; its id. */
async function deadLetter(payload: object): Promise<string> {
  const { rows } = await context.db.pool.query(
    `insert into steward.dead_letters (source, task_identifier, payload, attempts, max_attempts, last_error)
     values ('job', 'cleanup', $1::jsonb, 1, 1, 'gone') returning id::text`,
    [JSON.stringify(payload)],
  );
  return rows[0].id;
}

const auditCount = async () =>
  Number((await context.db.pool.query("select count(*) from steward.audit_log")).rows[0].count);

describe("the audit log", () => {
  it("records the session user and the current user whatever steward.actor claims, and keeps the claim apart", async () => {
    const role = await createTestRole(context.db, "audit_probe");
    const client = await context.db.pool.connect();
    try {
      const { rows: me } = await client.query("select session_user::text as name");
      await client.query("begin");
      await client.query("set local steward.actor = 'cli:alice'");
      await client.query(`grant usage on schema steward to ${role.name}`);
      // steward.audit runs as its caller (so current_user is the caller's): the role writes the row.
      await client.query(`grant execute on function steward.audit(text, text, jsonb) to ${role.name}`);
      await client.query(`grant insert on steward.audit_log to ${role.name}`);
      await client.query("select steward.audit('probe', 'as owner')");
      await client.query(`set local role ${role.name}`);
      await client.query("set local steward.actor = 'cli:root'");
      await client.query("select steward.audit('probe', 'as another role')");
      await client.query("reset role");
      const { rows } = await client.query(
        "select target, actor, current_user_name, claimed_actor, request_id from steward.audit_log where action = 'probe' order by id",
      );
      expect(rows).toEqual([
        {
          target: "as owner",
          actor: me[0].name,
          current_user_name: me[0].name,
          claimed_actor: "cli:alice",
          request_id: null,
        },
        {
          target: "as another role",
          actor: me[0].name,
          current_user_name: role.name,
          claimed_actor: "cli:root",
          request_id: null,
        },
      ]);
    } finally {
      await client.query("rollback");
      client.release();
      await role.drop();
    }
  });

  it("records the request id an application sets for its transaction, the one its record_requests rows carry", async () => {
    const letter = await deadLetter({ order: 7 });
    const client = await context.db.pool.connect();
    try {
      // An admin panel's request: it times itself and replays a dead letter, in one transaction.
      await client.query("begin");
      await client.query("select set_config('steward.request_id', $1, true)", ["req-7f3a"]);
      await client.query("select steward.replay_dead_letter($1)", [letter]);
      await client.query("select steward.record_requests($1::jsonb)", [
        JSON.stringify([
          {
            endpoint: "/admin/dead-letters/:id/replay",
            method: "POST",
            status: 200,
            duration_ms: 8,
            request_id: "req-7f3a",
          },
        ]),
      ]);
      await client.query("commit");
      // The same pooled connection, a later transaction: the id was local to the first.
      await client.query("select steward.purge_dead_letters('3650 days')");
    } finally {
      client.release();
    }
    const { rows } = await context.db.pool.query(`
      select a.action, a.target, a.request_id, r.endpoint
        from steward.audit_log a
        left join steward.requests r on r.request_id = a.request_id
       where a.action in ('replay_dead_letter', 'purge_dead_letters')
       order by a.id`);
    expect(rows).toEqual([
      {
        action: "replay_dead_letter",
        target: `dead_letter:${letter}`,
        request_id: "req-7f3a",
        endpoint: "/admin/dead-letters/:id/replay",
      },
      { action: "purge_dead_letters", target: null, request_id: null, endpoint: null },
    ]);

    const cli = await runCli(["audit", "--request-id", "req-7f3a", "--json"], { DATABASE_URL: context.db.url });
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toEqual([
      expect.objectContaining({
        action: "replay_dead_letter",
        request_id: "req-7f3a",
        target: `dead_letter:${letter}`,
      }),
    ]);
  }, 90_000);

  it("refuses a request id or a claimed actor over 200 characters, and the action with it", async () => {
    const letter = await deadLetter({ order: 8 });
    const before = await auditCount();
    for (const setting of ["steward.request_id", "steward.actor"]) {
      const client = await context.db.pool.connect();
      try {
        await client.query("begin");
        await client.query("select set_config($1, $2, true)", [setting, "x".repeat(201)]);
        await expect(client.query("select steward.replay_dead_letter($1)", [letter])).rejects.toMatchObject({
          code: "22001",
          message: `${setting} is 201 characters long; at most 200`,
        });
      } finally {
        await client.query("rollback");
        client.release();
      }
    }
    expect(await auditCount()).toBe(before);
    const { rows } = await context.db.pool.query("select replayed_at from steward.dead_letters where id = $1", [
      letter,
    ]);
    expect(rows[0].replayed_at).toBeNull();
  });
});

describe("steward audit", () => {
  const env = () => ({ DATABASE_URL: context.db.url });

  it("lists entries newest first, filtered by time, action and actor (session user or claimed)", async () => {
    const { pool } = context.db;
    await pool.query(`
      insert into steward.audit_log (at, actor, current_user_name, action, target, detail, claimed_actor) values
        (now() - interval '3 days', 'owner_a', 'owner_a', 'set_setting', 'old.one', '{"to": "1"}', 'cli:bob'),
        (now() - interval '2 hours', 'owner_a', 'owner_a', 'set_setting', 'x.y', '{"from": "1", "to": "2"}', 'cli:alice'),
        (now() - interval '1 hour', 'owner_b', 'owner_b', 'run', 'cleanup', '{"job_id": "9"}', 'worker')`);
    const all = await runCli(["audit", "--since", "1d"], env());
    expect(all.code, all.stderr).toBe(0);
    const lines = all.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^at\s+actor\s+action\s+target\s+request_id\s+detail$/);
    expect(lines.slice(1).map((line) => line.split(/\s{2,}/).slice(1, 4))).toEqual(
      expect.arrayContaining([
        ["owner_b (worker)", "run", "cleanup"],
        ["owner_a (cli:alice)", "set_setting", "x.y"],
      ]),
    );
    expect(all.stdout.indexOf("owner_b (worker)")).toBeLessThan(all.stdout.indexOf("owner_a (cli:alice)"));
    expect(all.stdout).not.toContain("old.one");

    const json = async (args: string[]) => {
      const result = await runCli(["audit", ...args, "--json"], env());
      expect(result.code, result.stderr).toBe(0);
      return (JSON.parse(result.stdout) as Array<{ target: string }>).map((entry) => entry.target);
    };
    const [byAction, byClaim, byRole, newest, none] = await Promise.all([
      json(["--action", "set_setting", "--since", "2026-01-01"]),
      json(["--actor", "cli:bob"]),
      json(["--actor", "owner_b"]),
      json(["--actor", "owner_a", "--max", "1"]),
      runCli(["audit", "--action", "no_such_action"], env()),
    ]);
    expect(byAction).toEqual(["x.y", "old.one"]);
    expect(byClaim).toEqual(["old.one"]);
    expect(byRole).toEqual(["cleanup"]);
    expect(newest).toEqual(["x.y"]);
    expect(none.stdout).toBe("no audit entries\n");
  }, 90_000);

  it("refuses bad arguments with usage and exit 2", async () => {
    const cases: [string[], string][] = [
      [["audit", "--since", "30"], '--since needs a unit: "30" alone could mean seconds or days'],
      [["audit", "--since", "yesterday"], '--since: "yesterday" is neither a duration nor a date'],
      [["audit", "--since", "2026-13-45"], '--since: "2026-13-45" is not a date'],
      [["audit", "--max", "0"], "--max must be an integer from 1 to 10000"],
      [["audit", "extra"], "expected 0 arguments"],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, env())));
    cases.forEach(([args, message], i) => {
      expect({ args, code: results[i]!.code }).toEqual({ args, code: 2 });
      expect(results[i]!.stderr).toContain(message);
      expect(results[i]!.stderr).toContain("usage: steward audit");
    });
  }, 90_000);
});
