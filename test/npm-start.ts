// `npm start` as a person or a supervisor runs it, for the front-door tests (test/start.test.ts,
// test/embedded.test.ts): in a process group of its own, as under a terminal, so a signal can be
// sent to the whole group the way Ctrl-C and `kill -TERM -<pgid>` send it.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PACKAGE_ROOT } from "../src/migrate.ts";

export interface NpmStart {
  pid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
  /** Sends `signal` to the whole process group (npm, the worker, anything else in it). */
  signalGroup(signal: NodeJS.Signals): void;
}

export function npmStart(options: { cwd?: string; env: Record<string, string> }): NpmStart {
  const child = spawn("npm", ["start", "--silent"], {
    cwd: options.cwd ?? PACKAGE_ROOT,
    env: { ...process.env, DATABASE_URL: "", LOG_LEVEL: "info", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  return {
    pid: child.pid!,
    exited,
    output: () => output,
    signalGroup: (signal) => process.kill(-child.pid!, signal),
  };
}

/** /readyz's body when it answers 200, else false. */
export async function readyz(port: number, host = "127.0.0.1") {
  try {
    const response = await fetch(`http://${host}:${port}/readyz`);
    return response.status === 200 ? await response.json() : false;
  } catch {
    return false;
  }
}

/** Whether any process of the group `pgid` is still alive. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The process of the group `pgid` running `steward` (npm's child). */
export async function stewardPid(pgid: number): Promise<number | undefined> {
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // pid (comm) state ppid pgrp …: comm may hold spaces, so count from its closing parenthesis.
    const group = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
    if (group !== pgid) continue;
    const argv = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (argv.includes("steward.js")) return Number(entry);
  }
  return undefined;
}

/** The ids of the PostgreSQL processes (postmaster and backends' parent) serving `cluster`. */
export async function serverProcesses(cluster: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    const args = argv.split("\0");
    if (args.some((arg, i) => arg === "-D" && args[i + 1] === cluster)) found.push(Number(entry));
  }
  return found;
}

/**
 * A copy of this working tree inside a folder closed to other users (0700), as `git clone` into
 * `mktemp -d` or /root makes one; node_modules is hard-linked (a fresh `npm install` minus the
 * download), so its files sit behind the closed folder too, and dist/ copied (what the install's
 * `prepare` builds).
 */
export async function closedCopy(): Promise<{ parent: string; project: string; remove(): Promise<void> }> {
  const parent = await fs.mkdtemp(path.join(os.tmpdir(), "steward-closed-"));
  await fs.chmod(parent, 0o700);
  const project = path.join(parent, "project");
  const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
    cwd: PACKAGE_ROOT,
    encoding: "utf8",
  })
    .split("\0")
    .filter(Boolean);
  for (const file of files) {
    const from = path.join(PACKAGE_ROOT, file);
    if (!(await fs.stat(from).catch(() => null))?.isFile()) continue;
    await fs.mkdir(path.dirname(path.join(project, file)), { recursive: true });
    await fs.copyFile(from, path.join(project, file));
  }
  try {
    execFileSync("cp", ["-al", path.join(PACKAGE_ROOT, "node_modules"), project]);
  } catch {
    // Another file system: a real copy.
    await fs.rm(path.join(project, "node_modules"), { recursive: true, force: true });
    execFileSync("cp", ["-a", path.join(PACKAGE_ROOT, "node_modules"), project]);
  }
  await fs.cp(path.join(PACKAGE_ROOT, "dist"), path.join(project, "dist"), { recursive: true });
  return { parent, project, remove: () => fs.rm(parent, { recursive: true, force: true }) };
}
