import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CircuitOpenError, Circuits } from "../src/client/circuits.ts";
import { DATABASE_GAUGES, createMetrics } from "../src/worker/metrics.ts";
import { createClientRole, sqlError, type ClientRole } from "./client-role.ts";
import { testClock } from "./clock.ts";
import { testLogger, useTestDatabase } from "./helpers.ts";

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

describe("circuit cleanup", () => {
  it("forgets healthy circuits after circuits.state_retention and keeps failing ones", async () => {
    await fail("healthy-again");
    await circuits.record("healthy-again", true);
    await fail("failing");
    const clock = await testClock(context.db.pool);
    try {
      await clock.advance(7 * 86_400_000 + 1000);
      expect(
        Number((await clock.client.query("select steward.cleanup_circuits(1000) as n")).rows[0].n),
      ).toBeGreaterThanOrEqual(1);
      const { rows } = await owner(
        "select name from steward.circuit_states where name in ('healthy-again', 'failing')",
      );
      expect(rows).toEqual([{ name: "failing" }]);
    } finally {
      await clock.release();
    }
  });
});

describe("circuit metrics", () => {
  it("exports steward_circuit_state with 1 for each circuit's current state", async () => {
    await configure("metered", 1, "1 hour");
    await fail("metered");
    const metrics = createMetrics(
      context.db.pool,
      testLogger(),
      DATABASE_GAUGES.filter((gauge) => gauge.name === "steward_circuit_state"),
    );
    const text = await metrics.registry.metrics();
    expect(text).toContain('steward_circuit_state{circuit="metered",state="open"} 1');
    expect(text).toContain('steward_circuit_state{circuit="metered",state="closed"} 0');
  });
});
