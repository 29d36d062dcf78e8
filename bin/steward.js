#!/usr/bin/env node
// The `steward` command: the compiled JavaScript in dist/ (`npm run build`, which `prepare` runs
// on install), so a start loads no compiler. Developing pg-steward: `npm run build` after editing
// sources (`npm test` does it), or `npm run steward:dev -- <command>` to run them through tsx.
// Checked before anything is loaded: graphile-worker 0.18 needs Node 22.18, and on an older Node
// it would fail somewhere deep inside an import. `npx steward` and the npm scripts put the
// project's own Node 22 (the `node` devDependency) first on PATH.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `steward needs Node 22.18 or newer, and this is Node ${process.versions.node}; in a clone of pg-steward, \`npx steward\` and the npm scripts (npm start, npm test) use the Node 22 it installs.\n`,
  );
  process.exit(2);
}
const main = new URL("../dist/src/cli/main.js", import.meta.url);
try {
  await import(main.href);
} catch (error) {
  if (error?.code === "ERR_MODULE_NOT_FOUND" && error.url === main.href) {
    process.stderr.write(
      "steward: the compiled code (dist/) is missing; in a clone of pg-steward run `npm run build` (npm install runs it)\n",
    );
    process.exit(2);
  }
  throw error;
}
