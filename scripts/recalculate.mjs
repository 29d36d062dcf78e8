#!/usr/bin/env zx
// Usage: npx zx scripts/recalculate.mjs <name> [--keys JSON | --keys-file FILE] [--timeout 2h]
//
// Starts a run of the registered recalculation <name> (every key, or the given ones) and follows
// it to its end with `steward recalc`, then says what to do about failed batches. --keys-file
// holds a JSON array, or one JSON key per line. Joins the run in progress if it asks for the same
// keys. Exit code: 0 completed, 1 failed, 2 bad arguments, 3 still running at --timeout.
import { readFile } from "node:fs/promises";
import { $, argv } from "zx";
import { STEWARD } from "./lib/steward.mjs";

const [name] = argv._;
if (!name || (argv.keys && argv["keys-file"])) {
  console.error("usage: npx zx scripts/recalculate.mjs <name> [--keys JSON | --keys-file FILE] [--timeout D]");
  process.exit(2);
}
let keys = argv.keys === undefined ? undefined : String(argv.keys);
if (argv["keys-file"]) {
  const text = (await readFile(argv["keys-file"], "utf8")).trim();
  keys = text.startsWith("[")
    ? text
    : JSON.stringify(
        text
          .split("\n")
          .filter((line) => line.trim())
          .map((line) => JSON.parse(line)),
      );
}
const args = ["recalc", String(name), ...(keys === undefined ? ["--all"] : ["--keys", keys])];
if (argv.timeout) args.push("--timeout", String(argv.timeout));

const result = await $({ stdio: "inherit", nothrow: true })`${STEWARD} ${args}`;
if (result.exitCode === 1) {
  console.log(
    "\nFailed batches went to the dead letters once their attempts ran out. After fixing the cause, replay them:\n" +
      "  npx zx scripts/replay-dead-letters.mjs --task recalculate_batch\n" +
      "(a replayed batch that succeeds turns its run from failed to completed).",
  );
}
process.exit(result.exitCode ?? 1);
