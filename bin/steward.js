#!/usr/bin/env node
// The `steward` command. The sources are TypeScript run through tsx, so there is no build step
// between `npm install` and `npm start`.
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
const { register } = await import("tsx/esm/api");
register();
await import("../src/cli/main.ts");
