import { describe, expect, it } from "vitest";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();

interface Bounds {
  name: string;
  type: string;
  value: string;
  min_value: string;
  max_value: string;
  below: string;
  above: string;
}

/** Every ranged setting with a value just below its minimum and one just above its maximum. */
async function settingBounds(): Promise<Bounds[]> {
  const { rows } = await context.db.pool.query<Bounds>(`
    select name, type, value, min_value, max_value,
           case type when 'integer' then (min_value::bigint - 1)::text
                     when 'numeric' then (min_value::numeric - 0.001)::text
                     when 'interval' then (min_value::interval - interval '1 microsecond')::text
                     when 'size' then (pg_size_bytes(min_value) - 1)::text || ' bytes' end as below,
           case type when 'integer' then (max_value::bigint + 1)::text
                     when 'numeric' then (max_value::numeric + 0.001)::text
                     when 'interval' then (max_value::interval + interval '1 microsecond')::text
                     when 'size' then (pg_size_bytes(max_value) + 1)::text || ' bytes' end as above
      from steward.settings
     where min_value is not null
     order by name`);
  return rows;
}

const valueOf = async (name: string) =>
  (await context.db.pool.query("select value from steward.settings where name = $1", [name])).rows[0].value;

describe("settings", () => {
  it("gives every setting but the boolean and text ones a range, shown by select * from steward.settings", async () => {
    const { rows } = await context.db.pool.query("select * from steward.settings order by name");
    expect(rows.length).toBeGreaterThanOrEqual(30);
    for (const row of rows) {
      expect(Object.keys(row)).toEqual([
        "name",
        "value",
        "type",
        "min_value",
        "max_value",
        "description",
        "updated_at",
      ]);
      if (row.type === "boolean" || row.type === "text")
        expect(row).toMatchObject({ min_value: null, max_value: null });
      else expect({ name: row.name, min: row.min_value, max: row.max_value }).not.toMatchObject({ min: null });
    }
    await expect(
      context.db.pool.query(
        "insert into steward.settings (name, value, type, description) values ('test.unranged', '5', 'integer', 'test')",
      ),
    ).rejects.toMatchObject({ code: "23514" });
  });

  it("accepts each setting's minimum and maximum and refuses a hair beyond either with 22023 naming the range, changing nothing", async () => {
    const bounds = await settingBounds();
    expect(bounds.length).toBeGreaterThanOrEqual(30);
    const { pool } = context.db;
    for (const setting of bounds) {
      const what = `${setting.name} (${setting.type} from ${setting.min_value} to ${setting.max_value})`;
      for (const value of [setting.min_value, setting.max_value]) {
        await expect(
          pool.query("select steward.set_setting($1, $2)", [setting.name, value]),
          what,
        ).resolves.toBeDefined();
      }
      for (const value of [setting.below, setting.above]) {
        await expect(
          pool.query("select steward.set_setting($1, $2)", [setting.name, value]),
          `${what}: ${value}`,
        ).rejects.toMatchObject({
          code: "22023",
          message: `setting "${setting.name}" must be from ${setting.min_value} to ${setting.max_value}, got "${value}"`,
        });
        expect(await valueOf(setting.name)).toBe(setting.max_value);
      }
      await pool.query("select steward.set_setting($1, $2)", [setting.name, setting.value]);
    }
  });

  it("keeps values in range however the row is written: an update by hand is refused too", async () => {
    await expect(
      context.db.pool.query("update steward.settings set value = '0' where name = 'invalidations.max_attempts'"),
    ).rejects.toMatchObject({
      code: "22023",
      message: 'setting "invalidations.max_attempts" must be from 1 to 1000, got "0"',
    });
    expect(await valueOf("invalidations.max_attempts")).toBe("10");
  });

  it("refuses a value of the wrong type, with a hint for sizes and intervals", async () => {
    const { pool } = context.db;
    const cases: [string, string, string][] = [
      ["invalidations.max_attempts", "2.5", "integer"],
      ["invalidations.max_attempts", "ten", "integer"],
      ["maintenance.vacuum_min_dead_ratio", "half", "numeric"],
      ["maintenance.lock_timeout", "soon", "interval"],
      ["maintenance.vacuum_buffer_usage_limit", "16 parsecs", "size"],
    ];
    for (const [name, value, type] of cases) {
      await expect(pool.query("select steward.set_setting($1, $2)", [name, value])).rejects.toMatchObject({
        code: "22023",
        message: `setting "${name}" takes a value of type ${type}, got "${value}"`,
      });
    }
    await expect(
      pool.query("select steward.set_setting('maintenance.vacuum_buffer_usage_limit', 'lots')"),
    ).rejects.toMatchObject({ hint: expect.stringContaining("16MB") });
  });

  it("takes a size in any unit pg_size_bytes reads, or empty for none, and hands VACUUM kilobytes", async () => {
    const { pool } = context.db;
    const options = async () => (await pool.query("select steward.vacuum_options() as o")).rows[0].o as string;
    await pool.query("select steward.set_setting('maintenance.vacuum_buffer_usage_limit', '16mb')");
    const { rows } = await pool.query("select current_setting('server_version_num')::int >= 160000 as has_limit");
    expect(await options()).toBe(
      rows[0].has_limit ? "ANALYZE, SKIP_LOCKED, BUFFER_USAGE_LIMIT '16384kB'" : "ANALYZE, SKIP_LOCKED",
    );
    await pool.query("select steward.set_setting('maintenance.vacuum_buffer_usage_limit', '')");
    expect(await options()).toBe("ANALYZE, SKIP_LOCKED");
  });

  it("refuses an unknown setting with SQLSTATE 22023 and a hint", async () => {
    await expect(context.db.pool.query("select steward.set_setting('no_such_thing', '1')")).rejects.toMatchObject({
      code: "22023",
      message: 'unknown setting "no_such_thing"',
      hint: expect.stringContaining("steward.settings"),
    });
  });

  it("checks the type, changes nothing on a bad value, and audits a good one", async () => {
    const { pool } = context.db;
    await pool.query(
      `insert into steward.settings (name, value, type, min_value, max_value, description)
       values ('test.retention', '7 days', 'interval', '1 day', '30 days', 'test')`,
    );
    await expect(pool.query("select steward.set_setting('test.retention', 'soon')")).rejects.toMatchObject({
      code: "22023",
      message: 'setting "test.retention" takes a value of type interval, got "soon"',
    });
    expect((await pool.query("select steward.setting_interval('test.retention') as v")).rows[0].v).toMatchObject({
      days: 7,
    });
    const { rows } = await pool.query("select steward.set_setting('test.retention', '3 days') as previous");
    expect(rows[0].previous).toBe("7 days");
    const { rows: audit } = await pool.query(
      "select action, target, detail from steward.audit_log where target = 'test.retention'",
    );
    expect(audit).toEqual([
      { action: "set_setting", target: "test.retention", detail: { from: "7 days", to: "3 days" } },
    ]);
  });
});
