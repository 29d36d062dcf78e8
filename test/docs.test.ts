// What README.md and docs/ name must exist: every `steward <command>`, every STEWARD_* variable,
// every steward.<name> and every link into the SQL reference; every variable the code reads is
// documented in docs/configuration.md; and the README's minute of SQL runs as written.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { COMMANDS } from "../src/cli/commands/index.ts";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { TASK_NAMES, TASKS } from "../tasks/index.ts";
import { useTestDatabase } from "./helpers.ts";

const context = useTestDatabase();
/** Hand-written pages (README, docs/, the examples' READMEs) by path from the package root; the SQL reference is generated. */
const pages = new Map<string, string>();
/** Every source file of the runtime, concatenated: where a variable must be read. */
let sources = "";

async function filesUnder(folder: string, pattern: RegExp): Promise<string[]> {
  const entries = await readdir(path.join(PACKAGE_ROOT, folder), { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile() && pattern.test(entry.name))
    .map((entry) => path.relative(PACKAGE_ROOT, path.join(entry.parentPath, entry.name)));
}

beforeAll(async () => {
  const examples = (await filesUnder("examples", /^README\.md$/)).filter((file) => !file.includes("node_modules"));
  for (const file of ["README.md", ...(await filesUnder("docs", /\.md$/)), ...examples]) {
    if (file !== "docs/sql-reference.md") pages.set(file, await readFile(path.join(PACKAGE_ROOT, file), "utf8"));
  }
  const code = [...(await filesUnder("src", /\.ts$/)), ...(await filesUnder("tasks", /\.ts$/)), "bin/steward.js"];
  sources = (await Promise.all(code.map((file) => readFile(path.join(PACKAGE_ROOT, file), "utf8")))).join("\n");
});

/** `[file, match]` for every match of `pattern` in the pages. */
function mentions(pattern: RegExp): Array<[string, string]> {
  return [...pages].flatMap(([file, text]) => [...text.matchAll(pattern)].map((m): [string, string] => [file, m[1]!]));
}

describe("README.md and docs/", () => {
  it("name only steward commands that exist", () => {
    const commands = new Set(COMMANDS.map((command) => command.name));
    // In code: `steward migrate`, `npx steward run …` (prose says "a steward function").
    const named = mentions(/(?:`|npx )steward ([a-z][a-z-]*)/g);
    expect(named.length).toBeGreaterThan(20);
    expect(
      named.filter(([, name]) => !commands.has(name)),
      "commands the docs name that src/cli/commands does not have",
    ).toEqual([]);
  });

  it("name only STEWARD_* variables the code reads, and document every one it reads", () => {
    const cron = TASK_NAMES.map((task) => `STEWARD_CRON_${task.toUpperCase()}`);
    const read = new Set([...sources.matchAll(/\b(STEWARD_[A-Z0-9_]*[A-Z0-9])\b/g)].map((m) => m[1]!));
    // `STEWARD_CRON_<TASK>` and `STEWARD_*` name a family: their prefix must be read.
    const unknown = mentions(/\b(STEWARD_[A-Z0-9_]*)/g).filter(
      ([, name]) => !(name.endsWith("_") ? sources.includes(name) : read.has(name) || cron.includes(name)),
    );
    expect(unknown, "variables the docs name that the code never reads").toEqual([]);
    const configuration = pages.get("docs/configuration.md")!;
    expect(
      [...read].filter((name) => !configuration.includes(`\`${name}\``)),
      "variables the code reads: add each to the table of docs/configuration.md",
    ).toEqual([]);
  });

  it("list every task with its default schedule", () => {
    const configuration = pages.get("docs/configuration.md")!;
    const missing = TASKS.filter((task) => {
      const row = configuration.split("\n").find((line) => line.startsWith(`| \`${task.identifier}\` |`));
      return !row?.includes(task.schedule ? `\`${task.schedule.pattern}\`` : "| none");
    }).map((task) => task.identifier);
    expect(missing, "tasks missing from the table of docs/configuration.md, or with another schedule").toEqual([]);
  });

  it("name only steward objects the database has", async () => {
    const { rows } = await context.db.pool.query<{ name: string }>(`
      select proname as name from pg_catalog.pg_proc where pronamespace = 'steward'::regnamespace
      union select relname from pg_catalog.pg_class where relnamespace = 'steward'::regnamespace
      union select tgname from pg_catalog.pg_trigger
      union select typname from pg_catalog.pg_type where typnamespace = 'steward'::regnamespace`);
    const objects = new Set(rows.map((row) => row.name));
    // Session settings the functions read (set steward.clock = …), and files named steward.* (a
    // path such as bin/steward.js is not a mention).
    const others = new Set(["clock", "actor", "request_id", "service", "env", "list"]);
    const unknown = mentions(/(?<![\w/-])steward\.([a-z_][a-z0-9_]*)/g).filter(
      // steward.requests_YYYYMMDD: a family of partitions.
      ([, name]) => !objects.has(name) && !others.has(name) && !(name.endsWith("_") && objects.has(name.slice(0, -1))),
    );
    expect(unknown, "steward.<name>s the docs mention that the migrated database does not have").toEqual([]);
  });

  it("link only to SQL reference entries that exist", async () => {
    const reference = await readFile(path.join(PACKAGE_ROOT, "docs/sql-reference.md"), "utf8");
    const anchors = new Set([...reference.matchAll(/^#+ (\S+)$/gm)].map((m) => m[1]!));
    const links = mentions(/sql-reference\.md#([a-z0-9_-]+)/g);
    expect(links.length).toBeGreaterThan(20);
    expect(
      links.filter(([, anchor]) => !anchors.has(anchor)),
      "links to docs/sql-reference.md entries that do not exist",
    ).toEqual([]);
  });

  it("link only to files and headings that exist", async () => {
    const broken: string[] = [];
    for (const [file, text] of pages) {
      for (const [, target = "", anchor] of text.matchAll(/\]\(([^)#\s]*)(?:#([^)\s]+))?\)/g)) {
        if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
        const resolved = target ? path.join(path.dirname(file), target) : file;
        const content = await readFile(path.join(PACKAGE_ROOT, resolved), "utf8").catch(() => undefined);
        if (content === undefined) {
          broken.push(`${file}: ${target}`);
        } else if (content !== undefined && anchor && resolved.endsWith(".md") && !headingSlugs(content).has(anchor)) {
          broken.push(`${file}: ${target}#${anchor}`);
        }
      }
    }
    expect(broken, "relative links to a missing file or heading").toEqual([]);
  });

  it("the README's minute of SQL runs as written", async () => {
    const readme = pages.get("README.md")!;
    const block = /## A minute of SQL\s+```sql\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    const statements = block!
      .replace(/--[^\n]*/g, "")
      .split(";")
      .map((statement) => statement.trim())
      .filter(Boolean);
    expect(statements.length).toBeGreaterThan(10);
    const client = await context.db.pool.connect();
    try {
      // One transaction, rolled back: the role and the tables it needs leave nothing behind.
      await client.query("begin");
      await client.query(`
        create role app_user nologin;
        create table public.orders (id bigint primary key, customer_id bigint, amount numeric,
                                    created_at timestamptz not null default now());
        create materialized view public.orders_summary as
          select customer_id, count(*) as orders from public.orders group by customer_id;
        create unique index on public.orders_summary (customer_id);
        create table public.events (id bigserial primary key, kind text not null)`);
      for (const statement of statements) {
        const error = await client.query(statement).then(
          () => null,
          (failure: Error) => failure.message,
        );
        expect(error, statement).toBeNull();
      }
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});

/** The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as dashes. */
function headingSlugs(markdown: string): Set<string> {
  const slugs = new Set<string>();
  const counts = new Map<string, number>();
  const text = markdown.replace(/```[\s\S]*?```/g, "");
  for (const [, heading] of text.matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = heading!
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const count = counts.get(slug) ?? 0;
    counts.set(slug, count + 1);
    slugs.add(count ? `${slug}-${count}` : slug);
  }
  return slugs;
}
