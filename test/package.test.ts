// pg-steward as a team installs it: `npm pack`, the tarball installed into a scratch application
// outside the repository (offline, from the npm cache), both entry points imported from plain
// JavaScript and from TypeScript (type-checked with tsc), a worker run with a task of the team's
// own and a crontab line, a rate limit hit from the application, and what `steward worker` loads.
import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../src/migrate.ts";
import { eventually, useTestDatabase } from "./helpers.ts";

const run = promisify(execFile);
const context = useTestDatabase();
/** npm and node as the npm scripts see them: the project's Node 22 first on PATH. */
const env = {
  ...process.env,
  PATH: `${path.join(PACKAGE_ROOT, "node_modules", ".bin")}${path.delimiter}${process.env.PATH}`,
};
let app: string;
let tarball: string;
let packedBytes: number;

const APP_JS = `
import { RateLimiter, enqueueJob, waitForJob } from "pg-steward";
import { builtinTasks, defineTask, PermanentError, startWorker } from "pg-steward/worker";
import pg from "pg";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
await pool.query("select steward.set_rate_limit('app', 2, '1 minute')");
const limiter = new RateLimiter(pool);
const hits = [];
for (let i = 0; i < 3; i++) hits.push((await limiter.hit("app", "user:1")).allowed);

const double = defineTask({
  identifier: "double",
  description: "doubles n",
  parse(payload) {
    if (typeof payload.n !== "number") throw new PermanentError("double: n must be a number");
    return { n: payload.n };
  },
  async run({ n }, { query }) {
    await query("insert into public.app_results (value) values ($1)", [n * 2]);
  },
});
const worker = await startWorker({
  url: process.env.DATABASE_URL,
  config: { healthPort: 0, logLevel: "warn" },
  tasks: [...builtinTasks, double],
  crontab: "0 4 * * * double ?id=nightly_double {n: 21}",
});
const id = await enqueueJob(pool, "double", { n: 4 });
const outcome = await waitForJob(pool, id, { timeoutMs: 20000 });
await worker.stop();
const { rows } = await pool.query("select value from public.app_results");
await pool.end();
console.log(JSON.stringify({ hits, outcome: outcome.state, values: rows.map((row) => row.value) }));
`;

const APP_TS = `
import { RateLimiter, type RateLimitDecision, batchInsert, enqueueInvalidation, page } from "pg-steward";
import { defineTask, PermanentError, startWorker, type RunningWorker, type TaskContext } from "pg-steward/worker";
import pg from "pg";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const decision: RateLimitDecision = await new RateLimiter(pool).hit("app", "user:ts");
const task = defineTask<{ n: number }>({
  parse(payload: unknown) {
    const n = (payload as { n?: unknown }).n;
    if (typeof n !== "number") throw new PermanentError("n must be a number");
    return { n };
  },
  async run({ n }, context: TaskContext) {
    context.logger.info({ n }, "typed");
  },
});
const start: (options: { url: string }) => Promise<RunningWorker> = startWorker;
void [batchInsert, enqueueInvalidation, page, task, start];
await pool.end();
console.log(JSON.stringify({ typed: typeof decision.allowed }));
`;

/** A team task module in TypeScript, run by Node's own type stripping (no tsx in the app). */
const TASK_TS = `
import { defineTask } from "pg-steward/worker";
interface Payload { who: string }
export default defineTask<Payload>({
  parse: (payload: unknown): Payload => ({ who: String((payload as Partial<Payload>).who) }),
  async run({ who }, { query }) {
    await query("insert into public.app_results (value) values ($1)", [who.length]);
  },
});
`;

/** Records every module URL the process resolves (module hooks run on a thread of their own). */
const MODULE_LIST_HOOK = `
import { register } from "node:module";
const hook = 'import fs from "node:fs"; export async function resolve(specifier, context, next) {' +
  ' const result = await next(specifier, context); fs.appendFileSync(' + JSON.stringify(process.env.STEWARD_MODULE_LIST) +
  ', result.url + "\\\\n"); return result; }';
register("data:text/javascript," + encodeURIComponent(hook));
`;

interface Packed {
  filename: string;
  size: number;
  integrity: string;
}

interface LockEntry {
  version?: string;
  dev?: boolean;
  devOptional?: boolean;
  [key: string]: unknown;
}

/**
 * The application's package.json and lock file. npm resolves a new dependency through the
 * registry's package documents, which an offline npm cache (filled by `npm ci`) does not hold;
 * a lock file naming every package needs only their tarballs, which it does hold. The lock is
 * pg-steward's own, less its development-only packages, plus the tarball and TypeScript.
 */
async function writeAppManifest(packed: Packed): Promise<void> {
  const own = JSON.parse(await fs.readFile(path.join(PACKAGE_ROOT, "package.json"), "utf8"));
  const lock = JSON.parse(await fs.readFile(path.join(PACKAGE_ROOT, "package-lock.json"), "utf8"));
  const entries = lock.packages as Record<string, LockEntry>;
  const spec = `file:../${packed.filename}`;
  const dependencies = {
    "pg-steward": spec,
    typescript: entries["node_modules/typescript"]!.version!,
    "@types/node": entries["node_modules/@types/node"]!.version!,
  };
  const packages: Record<string, LockEntry> = {
    "": { name: "team-app", dependencies },
    "node_modules/pg-steward": {
      version: own.version,
      resolved: spec,
      integrity: packed.integrity,
      dependencies: own.dependencies,
      bin: own.bin,
      engines: own.engines,
    },
  };
  const wanted = new Set(["node_modules/typescript", "node_modules/@types/node", "node_modules/undici-types"]);
  for (const [key, entry] of Object.entries(entries)) {
    if (!key || (entry.dev && !wanted.has(key))) continue;
    const { dev: _dev, devOptional: _devOptional, ...rest } = entry;
    packages[key] = rest;
  }
  await fs.writeFile(
    path.join(app, "package.json"),
    JSON.stringify({ name: "team-app", private: true, type: "module", dependencies }),
  );
  await fs.writeFile(
    path.join(app, "package-lock.json"),
    JSON.stringify({ name: "team-app", lockfileVersion: 3, requires: true, packages }, null, 2),
  );
}

beforeAll(async () => {
  const scratch = await fs.mkdtemp(path.join(os.tmpdir(), "steward-package-"));
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", scratch], {
    cwd: PACKAGE_ROOT,
    env,
    maxBuffer: 64 * 1024 * 1024,
  });
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf("["))) as [Packed];
  tarball = path.join(scratch, packed.filename);
  packedBytes = packed.size;
  app = path.join(scratch, "app");
  await fs.mkdir(path.join(app, "tasks"), { recursive: true });
  await writeAppManifest(packed);
  await run("npm", ["ci", "--offline", "--ignore-scripts", "--no-audit", "--no-fund"], {
    cwd: app,
    env,
    maxBuffer: 64 * 1024 * 1024,
  });
  await fs.writeFile(path.join(app, "app.mjs"), APP_JS);
  await fs.writeFile(path.join(app, "app.ts"), APP_TS);
  await fs.writeFile(path.join(app, "module-list.mjs"), MODULE_LIST_HOOK);
  await fs.writeFile(path.join(app, "tasks", "greet.ts"), TASK_TS);
  await fs.writeFile(
    path.join(app, "crontab"),
    "# the team's schedules\n15 3 * * * greet ?id=nightly_greet {who: 'cron'}\n",
  );
  await fs.writeFile(
    path.join(app, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        strict: true,
        noEmit: true,
        allowImportingTsExtensions: true,
        types: ["node"],
      },
      include: ["app.ts", "tasks"],
    }),
  );
  await context.db.pool.query("create table public.app_results (value int)");
}, 240_000);

afterAll(async () => {
  if (app) await fs.rm(path.dirname(app), { recursive: true, force: true });
});

describe("the package", () => {
  it("packs compiled code, migrations and the deploy files, without sources or tests", async () => {
    const { stdout } = await run("tar", ["-tzf", tarball]);
    const files = stdout
      .split("\n")
      .filter(Boolean)
      .map((file) => file.replace(/^package\//, ""));
    expect(files).toEqual(
      expect.arrayContaining([
        "bin/steward.js",
        "dist/src/cli/main.js",
        "dist/src/client/index.js",
        "dist/src/client/index.d.ts",
        "dist/src/worker/index.js",
        "dist/src/worker/index.d.ts",
        "dist/tasks/cleanup.js",
        "migrations/committed/000001-foundation.sql",
        "deploy/steward.service",
        "deploy/crontab.example",
        "examples/health-metrics/schema.sql",
        "README.md",
      ]),
    );
    expect(
      files.filter(
        (file) => /^(src|test|tasks|bench)\//.test(file) || file.endsWith(".map") || file.endsWith(".tsbuildinfo"),
      ),
    ).toEqual([]);
    expect(packedBytes).toBeLessThan(1_000_000);
  });

  it("serves the application from plain JavaScript: a rate limit, a job waited for, an in-process worker with a crontab", async () => {
    const { stdout } = await run(process.execPath, ["app.mjs"], {
      cwd: app,
      env: { ...env, DATABASE_URL: context.db.url },
    });
    expect(JSON.parse(stdout)).toEqual({ hits: [true, true, false], outcome: "completed", values: [8] });
    const { rows } = await context.db.pool.query(
      "select identifier from graphile_worker._private_known_crontabs where identifier = 'nightly_double'",
    );
    expect(rows).toHaveLength(1);
  });

  it("type-checks and runs from TypeScript", async () => {
    await run(path.join(app, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], { cwd: app, env });
    const { stdout } = await run(process.execPath, ["app.ts"], {
      cwd: app,
      env: { ...env, DATABASE_URL: context.db.url },
    });
    expect(JSON.parse(stdout)).toEqual({ typed: "boolean" });
  });

  it("runs `steward worker` from the application with its own task module and crontab, loading no bench, load or example code", async () => {
    const moduleList = path.join(app, "modules.txt");
    const child = spawn(
      process.execPath,
      ["--import", "./module-list.mjs", "node_modules/pg-steward/bin/steward.js", "worker"],
      {
        cwd: app,
        env: {
          ...env,
          DATABASE_URL: context.db.url,
          STEWARD_HEALTH_PORT: "0",
          STEWARD_MODULE_LIST: moduleList,
          LOG_LEVEL: "info",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    try {
      await eventually(async () => output.includes('"worker running"'), {
        timeoutMs: 30_000,
        what: `the worker to start:\n${output}`,
      });
      await context.db.pool.query(`select graphile_worker.add_job('greet', '{"who": "team"}')`);
      await eventually(
        async () => (await context.db.pool.query("select 1 from public.app_results where value = 4")).rowCount === 1,
        {
          what: "the team's TypeScript task to run",
        },
      );
      const { rows } = await context.db.pool.query(
        "select identifier from graphile_worker._private_known_crontabs where identifier = 'nightly_greet'",
      );
      expect(rows).toHaveLength(1);
      const { rows: workers } = await context.db.pool.query("select tasks from steward.worker_status where is_alive");
      expect(workers.flatMap((worker) => worker.tasks)).toContain("greet");
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
    const modules = (await fs.readFile(moduleList, "utf8")).split("\n");
    expect(modules.some((url) => url.includes("/pg-steward/dist/src/worker/runner.js"))).toBe(true);
    expect(
      modules.filter((url) =>
        /\/dist\/(bench|examples)\/|rate-limiter-flexible|pg-copy-streams|\/tsx\/|esbuild/.test(url),
      ),
    ).toEqual([]);
  });

  it("lists the crontab's schedule with its next run in `steward status`", async () => {
    const { stdout } = await run(process.execPath, ["node_modules/pg-steward/bin/steward.js", "status"], {
      cwd: app,
      env: { ...env, DATABASE_URL: context.db.url },
    });
    expect(stdout).toMatch(/nightly_greet\s+15 3 \* \* \*\s+greet \{"who":"cron"\}\s+in .*\/app\/crontab:2/);
  });

  it("says what `steward bench` needs when the development dependencies are not installed", async () => {
    const result = await run(process.execPath, ["node_modules/pg-steward/bin/steward.js", "bench", "--quick"], {
      cwd: app,
      env: { ...env, DATABASE_URL: context.db.url },
    }).catch((error: { code: number; stderr: string }) => error);
    expect(result).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("the benchmarks need pg-steward's development dependencies"),
    });
  });
});
