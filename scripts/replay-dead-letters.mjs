#!/usr/bin/env zx
// Usage: npx zx scripts/replay-dead-letters.mjs --task <task_identifier> [--dry-run] [--max N]
//
// Replays the dead letters of one task (e.g. recalculate_batch after a fix), oldest first, with
// steward.replay_dead_letter, paging through steward.list_dead_letters. Letters already replayed
// are skipped. --dry-run lists what it would replay; --max stops after N (default: all).
// Needs the dead-letter queue (steward.list_dead_letters).
import { argv } from "zx";
import { withPool } from "./lib/steward.mjs";

const task = argv.task;
const max = argv.max === undefined ? Infinity : Number(argv.max);
if (typeof task !== "string" || !task || !(max > 0)) {
  console.error("usage: npx zx scripts/replay-dead-letters.mjs --task <task_identifier> [--dry-run] [--max N]");
  process.exit(2);
}

const code = await withPool(async (pool) => {
  const { rows: present } = await pool.query(
    "select to_regprocedure('steward.list_dead_letters(text,integer)') is not null as present",
  );
  if (!present[0].present) {
    console.error(
      "this database has no dead-letter queue (steward.list_dead_letters): run steward migrate with a version that has it",
    );
    return 1;
  }
  let after = null;
  let replayed = 0;
  let seen = 0;
  for (;;) {
    const { rows } = await pool.query("select * from steward.list_dead_letters($1, 200)", [after]);
    if (!rows.length) break;
    after = rows.at(-1).cursor;
    for (const letter of rows) {
      if (letter.task_identifier !== task || letter.replayed_at) continue;
      seen++;
      if (replayed >= max) break;
      if (argv["dry-run"]) {
        console.log(`would replay ${letter.id}: ${JSON.stringify(letter.payload)} (${letter.last_error})`);
      } else {
        const { rows: job } = await pool.query("select steward.replay_dead_letter($1) as job", [letter.id]);
        console.log(`✔ replayed ${letter.id} as job ${job[0].job ?? "(requeued)"}: ${JSON.stringify(letter.payload)}`);
      }
      replayed++;
    }
    if (replayed >= max) break;
  }
  console.log(`${argv["dry-run"] ? "would replay" : "replayed"} ${replayed} of ${seen} dead letters of ${task}`);
  return 0;
});
process.exit(code);
