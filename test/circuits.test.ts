import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CircuitOpenError, CircuitTimeoutError, Circuits } from "../src/client/circuits.ts";
import { createClientRole, sqlError, type ClientRole } from "./client-role.ts";
import { testClock } from "./clock.ts";
import { asRole, createTestRole, useTestDatabase, withSettings } from "./helpers.ts";

const context = useTestDatabase();
let app: ClientRole;
let circuits: Circuits;
beforeAll(async () => {
  app = await createClientRole(context.db);
  circuits = new Circuits(app.pool);
});
afterAll(async () => {
  await app?.drop();
});

const owner = (sql: string, values: unknown[] = []) => context.db.pool.query(sql, values);
const configure = (name: string, threshold: number, cooldown: string, probes = 1) =>
  owner("select steward.circuit_configure($1, $2, $3::interval, $4)", [name, threshold, cooldown, probes]);
const stateOf = async (name: string) =>
  (await owner("select steward.circuit_state($1) as state", [name])).rows[0].state as string;
const fail = (name: string, times = 1) =>
  Array.from({ length: times }).reduce<Promise<unknown>>(
    (previous) => previous.then(() => circuits.record(name, false, "boom")),
    Promise.resolve(),
  );
/** Moves the opening a day back, so a circuit with a long cooldown is half-open now (no waiting, no timing). */
const endCooldown = async (name: string) => {
  await owner("update steward.circuit_states set opened_at = opened_at - interval '1 day' where name = $1", [name]);
  expect(await stateOf(name)).toBe("half_open");
};

describe("circuit breakers", () => {
  it("treats an unknown circuit as closed and keeps no row for its successes", async () => {
    expect(await circuits.allow("never-seen")).toBe(true);
    expect(await circuits.record("never-seen", true)).toBe("closed");
    expect(await stateOf("never-seen")).toBe("closed");
    expect((await owner("select * from steward.circuit_states where name = 'never-seen'")).rows).toEqual([]);
  });

  it("opens after failure_threshold consecutive failures; a success starts the count again", async () => {
    await configure("counting", 3, "1 hour");
    await fail("counting", 2);
    expect(await circuits.record("counting", true)).toBe("closed");
    await fail("counting", 2);
    expect(await stateOf("counting")).toBe("closed");
    expect(await circuits.record("counting", false, "timeout")).toBe("open");
    expect(await circuits.allow("counting")).toBe(false);
    const { rows } = await owner(
      "select state, consecutive_failures, last_error from steward.circuit_status where name = 'counting'",
    );
    expect(rows).toEqual([{ state: "open", consecutive_failures: 3, last_error: "timeout" }]);
  });

  it("goes closed, open, half-open, open again on a failed probe, then closed on a good one", async () => {
    await configure("cycle", 2, "1 hour");
    await fail("cycle", 2);
    expect(await stateOf("cycle")).toBe("open");
    expect(await circuits.allow("cycle")).toBe(false);
    await endCooldown("cycle");
    expect(await circuits.allow("cycle")).toBe(true);
    expect(await circuits.allow("cycle")).toBe(false);
    expect(
      (await owner("select probes_in_flight from steward.circuit_status where name = 'cycle'")).rows[0]
        .probes_in_flight,
    ).toBe(1);
    expect(await circuits.record("cycle", false, "still down")).toBe("open");
    expect(await circuits.allow("cycle")).toBe(false);
    await endCooldown("cycle");
    expect(await circuits.allow("cycle")).toBe(true);
    expect(await circuits.record("cycle", true)).toBe("closed");
    expect(await circuits.allow("cycle")).toBe(true);
    expect(
      (await owner("select consecutive_failures, probes_in_flight from steward.circuit_status where name = 'cycle'"))
        .rows,
    ).toEqual([{ consecutive_failures: 0, probes_in_flight: 0 }]);
  });

  it("admits at most half_open_probes probes at once across 40 connections", async () => {
    await configure("probing", 1, "1 hour", 3);
    await fail("probing");
    await endCooldown("probing");
    const clients = await app.connect(40);
    const allowed = await Promise.all(
      clients.map(async (client) => (await client.query("select steward.circuit_allow('probing') as ok")).rows[0].ok),
    );
    expect(allowed.filter(Boolean)).toHaveLength(3);
  });

  it("refuses until the cooldown has passed, and frees a probe slot that never reports after one more", async () => {
    await configure("lost-probe", 1, "1 minute");
    const clock = await testClock(context.db.pool, { role: app.name });
    const allow = async () =>
      (await clock.client.query("select steward.circuit_allow('lost-probe') as allowed")).rows[0].allowed;
    try {
      await clock.client.query("select steward.circuit_record('lost-probe', false, 'down')");
      await clock.advance(59_999);
      expect(await allow()).toBe(false);
      await clock.advance(1);
      expect(await allow()).toBe(true);
      expect(await allow()).toBe(false);
      // The probe never reports: its slot counts for one more cooldown, then frees.
      await clock.advance(59_999);
      expect(await allow()).toBe(false);
      await clock.advance(1);
      expect(await allow()).toBe(true);
    } finally {
      await clock.release();
    }
  });

  it("ignores outcomes reported while open: late calls neither close it nor extend the cooldown", async () => {
    await configure("late", 1, "1 hour");
    await fail("late");
    const openedAt = async () =>
      (await owner("select opened_at from steward.circuit_states where name = 'late'")).rows[0].opened_at;
    const first = await openedAt();
    expect(await circuits.record("late", true)).toBe("open");
    expect(await circuits.record("late", false, "again")).toBe("open");
    expect(await openedAt()).toEqual(first);
  });

  it("circuit_reset closes a circuit by hand and audits it", async () => {
    await configure("stuck", 1, "1 hour");
    await fail("stuck");
    expect((await owner("select steward.circuit_reset('stuck') as previous")).rows[0].previous).toBe("open");
    expect(await circuits.allow("stuck")).toBe(true);
    const { rows } = await owner("select action, detail from steward.audit_log where target = 'stuck' order by id");
    expect(rows.map((row) => row.action)).toEqual(["circuit_configure", "circuit_reset"]);
    expect(rows[1].detail).toEqual({ previous_state: "open" });
  });
});

describe("Circuits.withCircuit", () => {
  it("runs the work, records failures with their message, and rejects without running while open", async () => {
    await configure("webhook", 2, "1 hour");
    expect(await circuits.withCircuit("webhook", async () => 42)).toBe(42);
    for (let i = 0; i < 2; i++) {
      await expect(
        circuits.withCircuit("webhook", async () => Promise.reject(new Error("503 from upstream"))),
      ).rejects.toThrow("503 from upstream");
    }
    expect(
      (await owner("select state, last_error from steward.circuit_status where name = 'webhook'")).rows[0],
    ).toEqual({
      state: "open",
      last_error: "503 from upstream",
    });
    let ran = false;
    const error = await circuits.withCircuit("webhook", async () => (ran = true)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CircuitOpenError);
    expect(error).toMatchObject({ code: "CIRCUIT_OPEN", circuit: "webhook" });
    expect(ran).toBe(false);
    await endCooldown("webhook");
    expect(await circuits.withCircuit("webhook", async () => "recovered")).toBe("recovered");
    expect(await stateOf("webhook")).toBe("closed");
  });

  it("counts an error the caller says is not a failure as a healthy answer", async () => {
    await configure("lookup", 1, "1 hour");
    const notFound = Object.assign(new Error("404"), { status: 404 });
    await expect(
      circuits.withCircuit("lookup", async () => Promise.reject(notFound), {
        isFailure: (e) => (e as { status?: number }).status !== 404,
      }),
    ).rejects.toBe(notFound);
    expect(await stateOf("lookup")).toBe("closed");
  });
});

describe("circuit arguments and privileges", () => {
  it.each([
    ["an empty name", "", 5, "1 minute", 1, "22023", "circuit name must have 1 to 200 characters"],
    ["a zero threshold", "c", 0, "1 minute", 1, "22023", "failure_threshold must be positive, got 0"],
    ["a negative threshold", "c", -3, "1 minute", 1, "22023", "failure_threshold must be positive, got -3"],
    ["a zero cooldown", "c", 5, "0 seconds", 1, "22023", "cooldown must be a positive interval, got 00:00:00"],
    ["a negative cooldown", "c", 5, "-1 minute", 1, "22023", "cooldown must be a positive interval, got -00:01:00"],
    ["zero probes", "c", 5, "1 minute", 0, "22023", "half_open_probes must be positive, got 0"],
  ])(
    "circuit_configure refuses %s and changes nothing",
    async (_what, name, threshold, cooldown, probes, code, message) => {
      const count = async () =>
        Number(
          (
            await owner(
              "select (select count(*) from steward.circuits) + (select count(*) from steward.audit_log) as n",
            )
          ).rows[0].n,
        );
      const before = await count();
      expect(await sqlError(configure(name, threshold, cooldown, probes))).toMatchObject({ code, message });
      expect(await count()).toBe(before);
    },
  );

  it("refuses empty names and a null outcome from clients", async () => {
    expect(await sqlError(circuits.allow(""))).toMatchObject({
      code: "22023",
      message: "circuit name must not be empty",
    });
    expect(await sqlError(app.pool.query("select steward.circuit_record('x', null)"))).toMatchObject({
      code: "22004",
      message: "success must be true or false",
    });
  });

  it("uses defaults (5 failures, 60 s, 1 probe) and audits a configuration change with the previous values", async () => {
    await owner("select steward.circuit_configure('defaults')");
    await owner("select steward.circuit_configure('defaults', 7)");
    const { rows } = await owner(
      "select detail from steward.audit_log where action = 'circuit_configure' and target = 'defaults' order by id",
    );
    expect(rows[1].detail).toEqual({
      failure_threshold: 7,
      cooldown: "00:01:00",
      half_open_probes: 1,
      previous: { failure_threshold: 5, cooldown: "00:01:00", half_open_probes: 1 },
    });
  });

  it("lets steward_client allow and record, and nothing else", async () => {
    for (const statement of [
      "select steward.circuit_state('x')",
      "select steward.circuit_configure('x')",
      "select steward.circuit_reset('x')",
      "select steward.cleanup_circuits(10)",
      "select * from steward.circuits",
      "select * from steward.circuit_states",
      "select * from steward.circuit_status",
    ]) {
      expect((await sqlError(app.pool.query(statement))).code, statement).toBe("42501");
    }
  });
});

describe("Circuits.withCircuit timeouts and logging", () => {
  it("aborts work that never ends after timeoutMs and counts it as a failure", async () => {
    await configure("slow-dependency", 2, "1 hour");
    let signal: AbortSignal | undefined;
    const began = Date.now();
    const error = await circuits
      .withCircuit(
        "slow-dependency",
        (given) => {
          signal = given;
          return new Promise<never>(() => {});
        },
        { timeoutMs: 50 },
      )
      .catch((e: unknown) => e);
    expect(Date.now() - began).toBeLessThan(5000);
    expect(error).toBeInstanceOf(CircuitTimeoutError);
    expect(error).toMatchObject({ code: "CIRCUIT_TIMEOUT", circuit: "slow-dependency", timeoutMs: 50 });
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toBe(error);
    const { rows } = await owner(
      "select state, consecutive_failures, last_error from steward.circuit_status where name = 'slow-dependency'",
    );
    expect(rows).toEqual([
      {
        state: "closed",
        consecutive_failures: 1,
        last_error: 'call through circuit "slow-dependency" timed out after 50 ms',
      },
    ]);
  });

  it("counts a timeout as a failure even when isFailure would excuse the error", async () => {
    await configure("excused", 1, "1 hour");
    await expect(
      circuits.withCircuit(
        "excused",
        (signal) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")))),
        {
          timeoutMs: 20,
          isFailure: () => false,
        },
      ),
    ).rejects.toBeInstanceOf(CircuitTimeoutError);
    expect(await stateOf("excused")).toBe("open");
  });

  it("leaves work that finishes in time alone", async () => {
    let aborted = false;
    const value = await circuits.withCircuit(
      "quick",
      async (signal) => {
        signal.addEventListener("abort", () => (aborted = true));
        return "done";
      },
      { timeoutMs: 1000 },
    );
    expect(value).toBe("done");
    expect(aborted).toBe(false);
  });

  it("refuses a timeout that is not a positive number without calling anything", async () => {
    let ran = false;
    for (const timeoutMs of [0, -5, Number.NaN, Infinity]) {
      await expect(circuits.withCircuit("quick", async () => (ran = true), { timeoutMs })).rejects.toThrow(
        `timeoutMs must be a positive number, got ${timeoutMs}`,
      );
    }
    expect(ran).toBe(false);
  });

  it("logs each transition once, from the process that made it", async () => {
    const lines: { msg: string; circuit: string; from: string; to: string; level: number }[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    });
    const logged = new Circuits(app.pool, { logger: pino({ level: "info" }, sink) });
    const quiet = new Circuits(app.pool);
    await configure("observed", 2, "1 hour");
    const failing = () => Promise.reject(new Error("down"));
    await expect(logged.withCircuit("observed", failing)).rejects.toThrow("down");
    await expect(logged.withCircuit("observed", failing)).rejects.toThrow("down");
    await expect(logged.withCircuit("observed", failing)).rejects.toBeInstanceOf(CircuitOpenError);
    await endCooldown("observed");
    // Another process takes the probe: the half-open transition is its line, not ours.
    expect(await quiet.allow("observed")).toBe(true);
    expect(await logged.record("observed", true)).toBe("closed");
    expect(lines.map(({ msg, circuit, from, to, level }) => ({ msg, circuit, from, to, level }))).toEqual([
      { msg: "circuit observed opened", circuit: "observed", from: "closed", to: "open", level: 40 },
      { msg: "circuit observed is closed", circuit: "observed", from: "half_open", to: "closed", level: 30 },
    ]);
  });
});

describe("circuit transitions", () => {
  const transitions = async (name: string) =>
    (
      await owner(
        "select from_state, to_state, transitions::int from steward.circuit_transitions where circuit = $1 order by last_at, from_state",
        [name],
      )
    ).rows;

  it("counts closed, open, half_open, closed once each and returns them to the caller", async () => {
    await configure("counted", 1, "1 hour");
    const report = async (success: boolean) =>
      (await app.pool.query("select state, transitions from steward.circuit_report('counted', $1)", [success])).rows[0];
    expect(await report(false)).toEqual({ state: "open", transitions: [{ from: "closed", to: "open" }] });
    expect(await report(false)).toEqual({ state: "open", transitions: [] });
    await endCooldown("counted");
    expect((await app.pool.query("select * from steward.circuit_admit('counted')")).rows).toEqual([
      { allowed: true, state: "half_open", transitions: [{ from: "open", to: "half_open" }] },
    ]);
    expect((await app.pool.query("select * from steward.circuit_admit('counted')")).rows).toEqual([
      { allowed: false, state: "half_open", transitions: [] },
    ]);
    expect(await report(true)).toEqual({ state: "closed", transitions: [{ from: "half_open", to: "closed" }] });
    expect(await transitions("counted")).toEqual([
      { from_state: "closed", to_state: "open", transitions: 1 },
      { from_state: "open", to_state: "half_open", transitions: 1 },
      { from_state: "half_open", to_state: "closed", transitions: 1 },
    ]);
  });

  it("counts one opening when 40 connections report failures at once", async () => {
    await configure("stampede", 1, "1 hour");
    const clients = await app.connect(40);
    await Promise.all(
      clients.map((client) => client.query("select steward.circuit_record('stampede', false, 'boom')")),
    );
    expect(await transitions("stampede")).toEqual([{ from_state: "closed", to_state: "open", transitions: 1 }]);
  });

  it("counts the half-open step of an outcome that comes first after the cooldown", async () => {
    await configure("late-outcome", 1, "1 hour");
    await fail("late-outcome");
    await endCooldown("late-outcome");
    expect((await app.pool.query("select * from steward.circuit_report('late-outcome', false)")).rows).toEqual([
      {
        state: "open",
        transitions: [
          { from: "open", to: "half_open" },
          { from: "half_open", to: "open" },
        ],
      },
    ]);
  });

  it("counts a reset of an open circuit as a move to closed", async () => {
    await configure("reset-counted", 1, "1 hour");
    await fail("reset-counted");
    await owner("select steward.circuit_reset('reset-counted')");
    expect(await transitions("reset-counted")).toEqual([
      { from_state: "closed", to_state: "open", transitions: 1 },
      { from_state: "open", to_state: "closed", transitions: 1 },
    ]);
  });
});

describe("reserved circuit names", () => {
  const reserved = "steward:webhook:hooks.example.com";

  it("refuses steward: names to steward_client with 42501 naming the rule, and changes nothing", async () => {
    const rule = `circuit "${reserved}" is reserved: names starting with "steward:" belong to pg-steward's worker, and only the owner of schema steward may`;
    for (const [statement, action] of [
      ["select steward.circuit_record($1, false, 'forged')", "record"],
      ["select steward.circuit_record($1, true)", "record"],
      ["select steward.circuit_allow($1)", "use"],
      ["select * from steward.circuit_report($1, false)", "record"],
      ["select * from steward.circuit_admit($1)", "use"],
    ] as const) {
      expect(await sqlError(app.pool.query(statement, [reserved])), statement).toEqual({
        code: "42501",
        message: `${rule} ${action} them`,
        hint: "Name your application's circuits without the steward: prefix.",
      });
      // The same as an application role that SET ROLEs (as PostgREST does) on the owner's connection.
      const asClient = await asRole(context.db, "steward_client", (client) =>
        sqlError(client.query(statement, [reserved])),
      );
      expect(asClient.code, statement).toBe("42501");
    }
    expect((await owner("select * from steward.circuit_states where name = $1", [reserved])).rows).toEqual([]);
  });

  it("refuses configure and reset of steward: names to a role granted them, and lets the owner steer them", async () => {
    const operator = await createTestRole(context.db, "circuit_operator");
    try {
      // The functions and the checks they run first (a DBA granting them would also grant what they call).
      await owner(
        `grant usage on schema steward to ${operator.name};
         grant execute on function steward.circuit_configure(text, integer, interval, integer), steward.circuit_reset(text),
           steward.check_circuit_name(text, text), steward.caller_is_owner() to ${operator.name}`,
      );
      for (const [statement, action] of [
        ["select steward.circuit_configure($1, 1)", "configure"],
        ["select steward.circuit_reset($1)", "reset"],
      ] as const) {
        const error = await asRole(context.db, operator.name, (client) =>
          sqlError(client.query(statement, [reserved])),
        );
        expect(error).toMatchObject({ code: "42501", message: expect.stringContaining(`may ${action} them`) });
      }
    } finally {
      await operator.drop();
    }
    await owner("select steward.circuit_configure($1, 1, '1 hour')", [reserved]);
    expect((await owner("select steward.circuit_record($1, false, 'down') as state", [reserved])).rows[0].state).toBe(
      "open",
    );
    expect((await owner("select steward.circuit_reset($1) as previous", [reserved])).rows[0].previous).toBe("open");
  });

  it("names the webhook sink's circuit in the reserved namespace", async () => {
    const { sinksFromConfig } = await import("../src/worker/invalidations.ts");
    const { testConfig } = await import("./helpers.ts");
    const [sink] = sinksFromConfig(
      testConfig({ sinks: ["webhook"], webhookUrl: "http://127.0.0.1:9/hook" }),
      context.db.pool,
    );
    // An unreachable endpoint: the failure is recorded on steward:webhook:127.0.0.1:9.
    await expect(sink!.deliver(["t"])).rejects.toThrow("did not answer");
    expect(await stateOf("steward:webhook:127.0.0.1:9")).toBe("closed");
    expect(
      (
        await owner(
          "select consecutive_failures from steward.circuit_states where name = 'steward:webhook:127.0.0.1:9'",
        )
      ).rows,
    ).toEqual([{ consecutive_failures: 1 }]);
  });
});

describe("circuit metrics", () => {
  const series = async () =>
    (await owner("select metric, kind, labels, value from steward.circuit_metrics() order by metric, labels::text"))
      .rows;

  it("reaches /metrics through the umbrella: steward.metrics() has each circuit's state, 1 for the current one", async () => {
    await configure("metered-umbrella", 1, "1 hour");
    await fail("metered-umbrella");
    const { rows } = await context.db.pool.query(
      "select labels ->> 'state' as state, value from steward.metrics() where metric = 'steward_circuit_state' and labels ->> 'circuit' = 'metered-umbrella' order by 1",
    );
    expect(rows).toEqual(
      expect.arrayContaining([
        { state: "closed", value: 0 },
        { state: "open", value: 1 },
      ]),
    );
    expect(rows.filter((row) => row.value === 1)).toHaveLength(1);
  });

  it("reports each circuit's state and transitions in the metric-source shape", async () => {
    await configure("metered", 1, "1 hour");
    await fail("metered");
    const rows = await series();
    expect(rows).toEqual(
      expect.arrayContaining([
        { metric: "steward_circuit_state", kind: "gauge", labels: { circuit: "metered", state: "open" }, value: 1 },
        { metric: "steward_circuit_state", kind: "gauge", labels: { circuit: "metered", state: "closed" }, value: 0 },
        {
          metric: "steward_circuit_transitions_total",
          kind: "counter",
          labels: { circuit: "metered", from: "closed", to: "open" },
          value: 1,
        },
      ]),
    );
    const { rows: help } = await owner("select distinct metric, help from steward.circuit_metrics()");
    expect(help.every((row) => row.help.length > 20)).toBe(true);
  });

  it("labels at most circuits.metrics_top circuits, the worker's own first, and sums the rest under _other", async () => {
    await owner("select steward.circuit_record('steward:webhook:metrics.example', false)");
    // Activity a day ahead, one second apart: these three are the most recently active circuits.
    const clock = await testClock(context.db.pool, { start: new Date(Date.now() + 86_400_000) });
    try {
      for (const name of ["recent-1", "recent-2", "recent-3"]) {
        await configure(name, 1, "1 hour");
        await clock.advance(1000);
        await clock.client.query("select steward.circuit_record($1, false)", [name]);
      }
    } finally {
      await clock.release();
    }
    const reserved = (await owner("select name from steward.circuit_status where is_reserved")).rows.map((r) => r.name);
    expect(reserved).toContain("steward:webhook:metrics.example");
    await withSettings(context.db.pool, { "circuits.metrics_top": String(reserved.length + 2) }, async () => {
      const rows = await series();
      const labelled = new Set(rows.filter((row) => row.labels.circuit).map((row) => row.labels.circuit));
      expect([...labelled].sort()).toEqual(["_other", "recent-2", "recent-3", ...reserved].sort());
      const circuitsNow = Number((await owner("select count(*) from steward.circuit_status")).rows[0].count);
      const stateTotal = rows
        .filter((row) => row.metric === "steward_circuit_state")
        .reduce((sum, row) => sum + row.value, 0);
      expect(stateTotal).toBe(circuitsNow);
      const openings = async () =>
        (
          await owner(
            "select sum(transitions)::int as n from steward.circuit_transitions where from_state = 'closed' and to_state = 'open'",
          )
        ).rows[0].n;
      expect(
        rows
          .filter(
            (row) =>
              row.metric === "steward_circuit_transitions_total" &&
              row.labels.to === "open" &&
              row.labels.from === "closed",
          )
          .reduce((sum, row) => sum + row.value, 0),
      ).toBe(await openings());
    });
  });
});

describe("client-created circuits are bounded", () => {
  const census = async () =>
    (
      await owner(
        "select circuits, (select count(*)::int from steward.circuit_states) as counted from steward.circuit_census",
      )
    ).rows[0];
  const verifyRow = async () =>
    (await owner("select status, detail from steward.verify_installation() where name = 'circuit capacity'")).rows[0];

  it("keeps at most circuits.max_circuits of 20,000 junk circuits, refusing the rest with 53400, then cleanup forgets them", async () => {
    const before = await census();
    expect(before.circuits).toBe(before.counted);
    const cap = Number((await owner("select steward.setting('circuits.max_circuits') as v")).rows[0].v);
    expect(cap).toBe(10_000);
    // 20,000 calls on one warmed connection, each in a subtransaction of its own so that a refusal
    // fails only itself, committed every 100 calls as separate requests would be.
    const [client] = await app.connect(1);
    await client!.query("create temporary table outcome (code text)");
    await client!.query(`
      do $$
      begin
        for i in 1 .. 20000 loop
          begin
            perform steward.circuit_record('junk-' || i, false, 'junk');
            insert into outcome values ('ok');
          exception when others then
            insert into outcome values (sqlstate);
          end;
          if i % 100 = 0 then
            commit;
          end if;
        end loop;
      end
      $$`);
    const { rows: outcomes } = await client!.query(
      "select code, count(*)::int as n from outcome group by code order by code",
    );
    expect(outcomes).toEqual([
      { code: "53400", n: 20_000 - (cap - before.circuits) },
      { code: "ok", n: cap - before.circuits },
    ]);
    expect(await census()).toEqual({ circuits: cap, counted: cap });
    expect(await sqlError(app.pool.query("select steward.circuit_record('one-too-many', false)"))).toEqual({
      code: "53400",
      message: `too many circuits: ${cap} hold state and circuits.max_circuits is ${cap}, so circuit "one-too-many" was not created`,
      hint: "Circuits idle for circuits.state_retention are removed by the cleanup task; the database owner may raise circuits.max_circuits with steward.set_setting.",
    });
    // Circuits that exist keep working; the worker's own are never refused.
    expect((await app.pool.query("select steward.circuit_record('junk-1', true) as state")).rows[0].state).toBe(
      "closed",
    );
    expect((await owner("select steward.circuit_record('steward:webhook:at-cap', false) as state")).rows[0].state).toBe(
      "closed",
    );
    expect(await verifyRow()).toEqual({
      status: "fail",
      detail: expect.stringMatching(
        /^10001 of 10000 circuits \(circuits.max_circuits\) hold state: clients' new circuit names are refused/,
      ),
    });
    await withSettings(context.db.pool, { "circuits.max_circuits": "12000" }, async () => {
      expect((await verifyRow()).status).toBe("warn");
    });

    // A week and a day later, cleanup removes every idle circuit, failing or not.
    const clock = await testClock(context.db.pool);
    try {
      await clock.advance(8 * 86_400_000);
      let removed = 0;
      for (;;) {
        const n = Number((await clock.client.query("select steward.cleanup_circuits(5000) as n")).rows[0].n);
        removed += n;
        if (n < 5000) break;
      }
      expect(removed).toBeGreaterThanOrEqual(cap + 1);
    } finally {
      await clock.release();
    }
    expect(await census()).toEqual({ circuits: 0, counted: 0 });
    expect((await verifyRow()).status).toBe("ok");
  }, 120_000);

  it("admits exactly the places left when 40 clients create circuits at once", async () => {
    const { circuits: existing } = await census();
    await withSettings(context.db.pool, { "circuits.max_circuits": String(existing + 5) }, async () => {
      const clients = await app.connect(40);
      const outcomes = await Promise.all(
        clients.map((client, i) =>
          client
            .query("select steward.circuit_record($1, false)", [`racer-${i}`])
            .then(() => "ok")
            .catch((error: { code: string }) => error.code),
        ),
      );
      expect(outcomes.filter((o) => o === "ok")).toHaveLength(5);
      expect(outcomes.filter((o) => o === "53400")).toHaveLength(35);
    });
    expect(await census()).toEqual({ circuits: existing + 5, counted: existing + 5 });
  });
});

describe("circuit cleanup", () => {
  it("forgets circuits idle for circuits.state_retention, failing or not, and keeps active ones", async () => {
    await fail("healthy-again");
    await circuits.record("healthy-again", true);
    await fail("failing");
    await fail("active");
    const clock = await testClock(context.db.pool);
    try {
      await clock.advance(6 * 86_400_000);
      await clock.client.query("select steward.circuit_record('active', false)");
      await clock.advance(86_400_000 + 1000);
      await clock.client.query("select steward.cleanup_circuits(1000)");
      const { rows } = await owner(
        "select name from steward.circuit_states where name in ('healthy-again', 'failing', 'active')",
      );
      expect(rows).toEqual([{ name: "active" }]);
    } finally {
      await clock.release();
    }
  });

  it("folds the transition counts of forgotten circuits into circuit '' so totals never fall", async () => {
    await configure("configured", 1, "1 hour");
    const total = async () =>
      Number((await owner("select sum(transitions) as n from steward.circuit_transitions")).rows[0].n);
    await fail("forgotten", 5);
    await fail("configured");
    const before = await total();
    const clock = await testClock(context.db.pool);
    try {
      await clock.advance(8 * 86_400_000);
      for (;;) {
        const n = Number((await clock.client.query("select steward.cleanup_circuits(1000) as n")).rows[0].n);
        if (n < 1000) break;
      }
    } finally {
      await clock.release();
    }
    expect(await total()).toBe(before);
    expect((await owner("select * from steward.circuit_transitions where circuit = 'forgotten'")).rows).toEqual([]);
    expect(
      (await owner("select count(*)::int as n from steward.circuit_transitions where circuit = ''")).rows[0].n,
    ).toBeGreaterThan(0);
    // A configured circuit's state goes, but it keeps its own counts.
    expect((await owner("select * from steward.circuit_states where name = 'configured'")).rows).toEqual([]);
    expect(
      (
        await owner(
          "select from_state, to_state, transitions::int from steward.circuit_transitions where circuit = 'configured'",
        )
      ).rows,
    ).toEqual([{ from_state: "closed", to_state: "open", transitions: 1 }]);
  });
});
