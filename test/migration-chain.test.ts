// A database whose applied migrations depart from pg-steward's migrations/committed/ (a team's
// own migration sharing the numbering, an edited file, a gap) makes `steward migrate` stop
// before applying anything and `steward verify` fail, naming the migration and the fix.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MIGRATIONS_FOLDER, migrate } from "../src/migrate.ts";
import { checkMigrationChain, compareChains, MigrationChainError } from "../src/migration-chain.ts";
import { runCli, testLogger, useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
let folder: string;

beforeAll(async () => {
  folder = await fs.mkdtemp(path.join(os.tmpdir(), "steward-chain-"));
  await fs.cp(MIGRATIONS_FOLDER, folder, { recursive: true });
});
afterAll(async () => {
  await fs.rm(folder, { recursive: true, force: true });
});

/** Runs `work` with graphile_migrate.migrations changed, then puts it back. */
async function withAppliedChain(change: string, work: () => Promise<void>): Promise<void> {
  const client = await context.db.pool.connect();
  try {
    await client.query("create temporary table saved as select * from graphile_migrate.migrations");
    await client.query(change);
    await work();
  } finally {
    await client.query(
      "delete from graphile_migrate.migrations; insert into graphile_migrate.migrations select * from saved; drop table saved",
    );
    client.release();
  }
}

/** The latest migration applied (000018.sql, …): graphile-migrate names them by number. */
async function lastApplied(): Promise<string> {
  const { rows } = await context.db.pool.query("select max(filename) as filename from graphile_migrate.migrations");
  return rows[0].filename as string;
}

async function appliedCount(): Promise<number> {
  return (await context.db.pool.query("select count(*)::int as n from graphile_migrate.migrations")).rows[0].n;
}

describe("the migration chain", () => {
  it("is fine on a database migrated by this version, and verify says so", async () => {
    expect(await checkMigrationChain(context.db.pool, MIGRATIONS_FOLDER)).toEqual([]);
    const result = await runCli(["verify", "--json"], { DATABASE_URL: context.db.url });
    const checks = JSON.parse(result.stdout) as Array<{ name: string; status: string }>;
    expect(checks.find((check) => check.name === "migration chain")?.status).toBe("ok");
  });

  it("stops migrate when a team's own migration took one of pg-steward's numbers", async () => {
    // The team committed its own migration under the number of pg-steward's latest, before that
    // existed (the latest: no applied migration points at it, so its hash can be changed).
    const last = await lastApplied();
    const number = last.replace(/\.sql$/, "");
    await withAppliedChain(
      `update graphile_migrate.migrations set hash = 'sha1:team' where filename = '${last}'`,
      async () => {
        const before = await appliedCount();
        const error = await migrate(context.db.url, testLogger()).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(MigrationChainError);
        expect((error as MigrationChainError).problems.map((p) => [p.filename, p.kind])).toEqual([[last, "different"]]);
        expect((error as Error).message).toMatch(
          new RegExp(`${number}\\.sql: applied with hash sha1:team, but pg-steward's migrations/committed/${number}-`),
        );
        expect(await appliedCount()).toBe(before);

        const cli = await runCli(["migrate"], { DATABASE_URL: context.db.url });
        expect(cli.code).toBe(1);
        expect(cli.stderr).toContain("do not match pg-steward's migrations/committed/");
        const verify = await runCli(["verify"], { DATABASE_URL: context.db.url });
        expect(verify.code).toBe(1);
        expect(verify.stdout).toMatch(
          new RegExp(`✗ migration chain\\s+.*${number}\\.sql: applied with hash sha1:team`),
        );
      },
    );
  });

  it("names an applied migration pg-steward does not have", async () => {
    await withAppliedChain(
      `insert into graphile_migrate.migrations (filename, hash, previous_hash)
         select '000099.sql', 'sha1:ours', hash from graphile_migrate.migrations where filename = '${await lastApplied()}'`,
      async () => {
        const problems = await checkMigrationChain(context.db.pool, MIGRATIONS_FOLDER);
        expect(problems.map((p) => [p.filename, p.kind])).toEqual([["000099.sql", "unknown"]]);
        expect(problems[0]!.detail).toContain("pg-steward has no such migration");
      },
    );
  });

  it("names a migration graphile-migrate would skip because a later one is applied", () => {
    const committed = ["000001.sql", "000002.sql", "000003.sql"].map((filename) => ({
      filename,
      file: `migrations/committed/${filename}`,
      hash: `sha1:${filename}`,
      isIntact: true,
    }));
    const applied = [committed[0]!, committed[2]!].map(({ filename, hash }) => ({ filename, hash }));
    expect(compareChains(committed, applied).map((p) => [p.filename, p.kind])).toEqual([["000002.sql", "skipped"]]);
    expect(compareChains(committed, applied.slice(0, 1))).toEqual([]);
  });

  it("refuses a committed file edited after it was applied", async () => {
    const files = await fs.readdir(path.join(folder, "committed"));
    const file = path.join(
      folder,
      "committed",
      files.find((name) => name.startsWith("000011"))!,
    );
    await fs.appendFile(file, "\n-- a local change\nselect 1;\n");
    const problems = await checkMigrationChain(context.db.pool, folder);
    expect(problems.map((p) => [p.filename, p.kind])).toEqual([["000011.sql", "edited"]]);
    await expect(migrate(context.db.url, testLogger(), { migrationsFolder: folder })).rejects.toThrow(
      /was edited after it was committed/,
    );
  });
});
