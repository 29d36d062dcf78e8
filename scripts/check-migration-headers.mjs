#!/usr/bin/env node
// Usage: node scripts/check-migration-headers.mjs
//
// Checks the `--! Previous:` and `--! Hash:` headers of migrations/committed/*.sql in order,
// computed the way `graphile-migrate commit` writes them, and fails naming every file whose
// headers do not match its content. Committed migrations are released: a database records each
// one's hash, so a committed file is never edited. A change goes into migrations/current.sql and
// becomes a new committed migration with `npx graphile-migrate commit`. (Before the first release
// this script also rewrote the headers, while capabilities were edited in place; that mode is
// retired.) Run by `npm run lint`, so by `npm test` and CI.
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

const folder = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "migrations", "committed");

// graphile-migrate's calculateHash: sha1 over the previous hash, a newline and the trimmed body.
const hashOf = (body, previous) =>
  "sha1:" +
  createHash("sha1")
    .update(((previous ?? "") + "\n" + body.trim()).trim() + "\n")
    .digest("hex");

const files = (await readdir(folder)).filter((file) => /^\d{6}(-.*)?\.sql$/.test(file)).sort();
let previous = null;
const stale = [];
for (const file of files) {
  const lines = (await readFile(path.join(folder, file), "utf8")).split("\n");
  const headers = new Map();
  let index = 0;
  for (; index < lines.length; index++) {
    const match = /^--! ([A-Z][a-zA-Z0-9_]*)(?::(.*))?$/.exec(lines[index]);
    if (!match) break;
    headers.set(match[1], match[2]?.trim() ?? null);
  }
  const hash = hashOf(lines.slice(index).join("\n"), previous);
  if (headers.get("Previous") !== (previous ?? "-") || headers.get("Hash") !== hash) stale.push(file);
  previous = hash;
}
if (stale.length) {
  // Each hash covers the one before it, so one edited file makes every later header stale too.
  const later = stale.length > 1 ? ` (and the ${stale.length - 1} after it, whose hashes chain from it)` : "";
  console.error(
    `migrations/committed/${stale[0]} does not match its --! Previous/Hash headers${later}. ` +
      "A committed migration is never edited (databases record its hash): undo the edit and put the change in " +
      "migrations/current.sql, then `npx graphile-migrate commit`.",
  );
  process.exit(1);
}
console.log(`${files.length} migrations, headers current`);
