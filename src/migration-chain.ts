// The applied migration chain (graphile_migrate.migrations) against pg-steward's committed files.
// graphile-migrate applies only files numbered after the last applied one and never re-checks
// applied hashes, so a database that applied another 000009 (a team's migration sharing the
// numbering) would silently skip pg-steward's 000009. `steward migrate` and `verify` stop instead.
import fs from "node:fs/promises";
import path from "node:path";
import { calculateHash } from "graphile-migrate/dist/hash.js";
import { parseMigrationText } from "graphile-migrate/dist/migration.js";
import type pg from "pg";
import { StewardError, isUndefinedRelation } from "./errors.ts";

export interface CommittedMigration {
  /** As graphile-migrate records it: `000009.sql`. */
  filename: string;
  file: string;
  /** The `--! Hash:` header. */
  hash: string;
  /** Whether the body still hashes to the header (false: the file was edited after commit). */
  isIntact: boolean;
}

export interface AppliedMigration {
  filename: string;
  hash: string;
}

export interface ChainProblem {
  filename: string;
  kind: "edited" | "different" | "unknown" | "skipped";
  detail: string;
}

/** Where the fix is explained. */
const SEE = 'docs/dba-workflow.md, "Your own schema and pg-steward\'s migrations"';

/** A chain that graphile-migrate would get wrong: `steward migrate` stops with it. */
export class MigrationChainError extends StewardError {
  constructor(readonly problems: ChainProblem[]) {
    super("MIGRATION_CHAIN", describeChainProblems(problems));
  }
}

export function describeChainProblems(problems: ChainProblem[]): string {
  return [
    `the database's applied migrations do not match pg-steward's migrations/committed/ (${SEE}):`,
    ...problems.map((problem) => `  ${problem.filename}: ${problem.detail}`),
    "Nothing was applied.",
  ].join("\n");
}

/** pg-steward's committed migrations, in order, with their header hashes. */
export async function committedChain(folder: string): Promise<CommittedMigration[]> {
  const directory = path.join(folder, "committed");
  const names = (await fs.readdir(directory)).filter((name) => /^\d{6}(-[^/]*)?\.sql$/.test(name)).sort();
  return Promise.all(
    names.map(async (name) => {
      const file = path.join(directory, name);
      const { headers, body } = parseMigrationText(file, await fs.readFile(file, "utf8"));
      const hash = String(headers.Hash ?? "");
      const previous = headers.Previous && headers.Previous !== "-" ? String(headers.Previous) : null;
      return {
        filename: `${name.slice(0, 6)}.sql`,
        file: path.join("migrations", "committed", name),
        hash,
        isIntact: calculateHash(body, previous) === hash,
      };
    }),
  );
}

/** The applied chain; empty when graphile-migrate has never run here. */
async function appliedChain(pool: pg.Pool): Promise<AppliedMigration[]> {
  try {
    const { rows } = await pool.query<AppliedMigration>(
      "select filename, hash from graphile_migrate.migrations order by filename",
    );
    return rows;
  } catch (error) {
    if (isUndefinedRelation(error)) return [];
    throw error;
  }
}

/** Every way the applied chain departs from the committed one; empty when it is a prefix of it. */
export function compareChains(committed: CommittedMigration[], applied: AppliedMigration[]): ChainProblem[] {
  const problems: ChainProblem[] = [];
  const appliedByName = new Map(applied.map((row) => [row.filename, row]));
  const lastApplied = applied.at(-1)?.filename;
  for (const migration of committed) {
    const row = appliedByName.get(migration.filename);
    if (!migration.isIntact) {
      problems.push({
        filename: migration.filename,
        kind: "edited",
        detail: `${migration.file} was edited after it was committed (its body no longer matches its Hash header); restore it from pg-steward's release, and put changes in a new migration`,
      });
    } else if (row && row.hash !== migration.hash) {
      problems.push({
        filename: migration.filename,
        kind: "different",
        detail: `applied with hash ${row.hash}, but pg-steward's ${migration.file} has ${migration.hash}: another migration was applied under this number (your own, sharing pg-steward's numbering?), so pg-steward's would never be applied; move your migrations out of pg-steward's chain`,
      });
    } else if (!row && lastApplied !== undefined && migration.filename < lastApplied) {
      problems.push({
        filename: migration.filename,
        kind: "skipped",
        detail: `pg-steward's ${migration.file} is not applied, but the later ${lastApplied} is: graphile-migrate only applies migrations after the last applied one, so it would be skipped for good`,
      });
    }
  }
  const known = new Set(committed.map((migration) => migration.filename));
  for (const row of applied) {
    if (!known.has(row.filename)) {
      problems.push({
        filename: row.filename,
        kind: "unknown",
        detail: `applied (hash ${row.hash}), but pg-steward has no such migration: your own migration in pg-steward's chain, or a database migrated by a newer pg-steward`,
      });
    }
  }
  return problems.sort((a, b) => a.filename.localeCompare(b.filename));
}

/** The problems of the database's chain against the committed files of `folder`. */
export async function checkMigrationChain(pool: pg.Pool, folder: string): Promise<ChainProblem[]> {
  const [committed, applied] = await Promise.all([committedChain(folder), appliedChain(pool)]);
  return compareChains(committed, applied);
}
