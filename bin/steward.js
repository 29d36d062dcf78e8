#!/usr/bin/env node
// The `steward` command. The sources are TypeScript run through tsx, so there is no build step
// between `npm install` and `npm start`.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
