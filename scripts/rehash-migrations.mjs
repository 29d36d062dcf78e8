#!/usr/bin/env zx
// Usage: npx zx scripts/rehash-migrations.mjs [--check]
//
// Recomputes the `--! Previous:` and `--! Hash:` headers of migrations/committed/*.sql in
// order, the way `graphile-migrate commit` writes them. For the team while capabilities are
// developed side by side before a release: a migration that has been released to anyone must
// never be edited (their database records its hash), so after a release this script is only
// used with --check, which fails when a header is stale.
import { createHash } from "node:crypto";
import { readdir, readFile, writeFile, chmod } from "node:fs/promises";
import path from "node:path";
import { argv } from "zx";

const folder = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "migrations", "committed");
const check = argv.check === true;

// graphile-migrate's calculateHash: sha1 over the previous hash, a newline and the trimmed body.
const hashOf = (body, previous) =>
  "sha1:" +
  createHash("sha1")
    .update(((previous ?? "") + "\n" + body.trim()).trim() + "\n")
    .digest("hex");

const files = (await readdir(folder)).filter((file) => /^\d{6}(-.*)?\.sql$/.test(file)).sort();
let previous = null;
let stale = 0;
for (const file of files) {
  const full = path.join(folder, file);
  const text = await readFile(full, "utf8");
  const lines = text.split("\n");
  const headers = [];
  let index = 0;
  for (; index < lines.length; index++) {
    const match = /^--! ([A-Z][a-zA-Z0-9_]*)(?::(.*))?$/.exec(lines[index]);
    if (!match) break;
    headers.push([match[1], match[2]?.trim() ?? null]);
  }
  const body = lines.slice(index).join("\n").trim() + "\n";
  const hash = hashOf(body, previous);
  const others = headers.filter(([key]) => !["Previous", "Hash"].includes(key));
  const header = [["Previous", previous ?? "-"], ["Hash", hash], ...others]
    .map(([key, value]) => `--! ${key}` + (value ? `: ${value}` : ""))
    .join("\n");
  const rewritten = `${header}\n\n${body}`;
  if (rewritten !== text) {
    stale++;
    if (check) console.error(`${file}: headers are stale`);
    else {
      await chmod(full, 0o644);
      await writeFile(full, rewritten);
      console.log(`${file}: ${hash}`);
    }
  }
  previous = hash;
}
if (check && stale) process.exit(1);
if (!stale) console.log(`${files.length} migrations, headers current`);
