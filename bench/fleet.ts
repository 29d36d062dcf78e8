// `steward bench --workers 1,2,4`: what a fleet of worker processes against one database does
// and costs. For each fleet size: no-op jobs per second through that many `steward worker`
// processes, invalidations per second drained by that many processes, and, with the fleet idle,
// the connections it holds and the statements it sends per second.
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { median } from "./run.ts";

/** What a member tells the parent. */
export type FleetMessage =
  { type: "ready" } | { type: "succeeded"; count: number } | { type: "drained"; delivered: number };

/** What the parent tells a member. */
export type FleetCommand = { type: "go" } | { type: "stop" };

export const FLEET_TASK = "bench_fleet_noop";
export const DRAIN_BATCH = 500;

export interface FleetResult {
  workers: number;
  jobsPerSecond: number;
  tagsPerSecond: number;
  connections: number;
  idleStatementsPerSecond: number;
  /** How idle statements were counted: pg_stat_statements calls, or pg_stat_database commits. */
  counted: "pg_stat_statements" | "xact_commit";
}

const MEMBER = fileURLToPath(new URL("./fleet-worker.ts", import.meta.url));

interface Member {
  child: ChildProcess;
  last: FleetMessage | undefined;
  ready: Promise<void>;
  command(command: FleetCommand): void;
  exited: Promise<void>;
}

function spawnMember(mode: "jobs" | "drain", url: string, onMessage: (message: FleetMessage) => void): Member {
  const child = fork(MEMBER, [mode, url], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  const member: Member = {
    child,
    last: undefined,
    ready: new Promise((resolve, reject) => {
      child.on("message", (message: FleetMessage) => {
        member.last = message;
        if (message.type === "ready") resolve();
        onMessage(message);
      });
      child.once("exit", (code) => reject(new Error(`fleet member exited with ${code} before it was ready`)));
    }),
    command: (command) => child.send(command),
    exited: new Promise((resolve) => child.once("exit", () => resolve())),
  };
  return member;
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("steward bench --workers: a fleet round did not finish in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Statements the database ran so far (all sessions of this database), and how they were counted. */
async function statementCount(client: pg.Client, counted: FleetResult["counted"]): Promise<number> {
  if (counted === "pg_stat_statements") {
    const { rows } = await client.query(
      `select coalesce(sum(calls), 0)::float8 as n from pg_stat_statements s
         join pg_database d on d.oid = s.dbid where d.datname = current_database()`,
    );
    return rows[0].n;
  }
  await client.query("select pg_stat_force_next_flush()");
  const { rows } = await client.query(
    "select xact_commit::float8 as n from pg_stat_database where datname = current_database()",
  );
  return rows[0].n;
}

/** Jobs through `workers` processes, then the same fleet idle. */
async function jobsRound(
  url: string,
  workers: number,
  jobs: number,
  idleMs: number,
  client: pg.Client,
  counted: FleetResult["counted"],
) {
  await client.query("vacuum graphile_worker._private_jobs");
  await client.query(
    `select count(*) from graphile_worker.add_jobs(array(
       select row($1::text, '{}'::json, null, now() - ($2::int - n) * interval '1 microsecond', null, null, null, null)::graphile_worker.job_spec
         from generate_series(1, $2::int) as n))`,
    [FLEET_TASK, jobs],
  );
  await client.query("analyze graphile_worker._private_jobs");
  const succeeded = new Map<number, number>();
  const total = () => [...succeeded.values()].reduce((sum, n) => sum + n, 0);
  const skipped = Math.floor(jobs / 20);
  let began = 0;
  const members = Array.from({ length: workers }, (_, index) =>
    spawnMember("jobs", url, (message) => {
      if (message.type !== "succeeded") return;
      succeeded.set(index, message.count);
      if (!began && total() >= skipped) began = performance.now();
    }),
  );
  try {
    await Promise.all(members.map((member) => member.ready));
    await until(async () => {
      const { rows } = await client.query("select not exists (select from graphile_worker._private_jobs) as empty");
      return rows[0].empty && began > 0;
    }, 600_000);
    const jobsPerSecond = (jobs - skipped) / ((performance.now() - began) / 1000);
    // Idle: the fleet polls, heartbeats and listens; nothing is queued.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const { rows } = await client.query(
      `select count(*)::int as n from pg_stat_activity
        where datname = current_database() and application_name like 'steward worker%'`,
    );
    const before = await statementCount(client, counted);
    const start = performance.now();
    await new Promise((resolve) => setTimeout(resolve, idleMs));
    const after = await statementCount(client, counted);
    // Less this client's own two counting statements (one transaction each).
    const idle = (after - before - 2) / ((performance.now() - start) / 1000);
    return { jobsPerSecond, connections: rows[0].n / workers, idleStatementsPerSecond: idle };
  } finally {
    members.forEach((member) => member.command({ type: "stop" }));
    await Promise.all(members.map((member) => member.exited));
  }
}

/** Invalidations drained by `workers` processes at once. */
async function drainRound(url: string, workers: number, tags: number, client: pg.Client): Promise<number> {
  await client.query("delete from steward.invalidations");
  await client.query("vacuum steward.invalidations");
  await client.query(
    "select steward.enqueue_invalidations(array(select 'bench:' || g from generate_series(1, $1) g))",
    [tags],
  );
  const members = Array.from({ length: workers }, () => spawnMember("drain", url, () => {}));
  try {
    await Promise.all(members.map((member) => member.ready));
    const began = performance.now();
    members.forEach((member) => member.command({ type: "go" }));
    await until(() => members.every((member) => member.last?.type === "drained"), 600_000);
    const seconds = (performance.now() - began) / 1000;
    const delivered = members.reduce(
      (sum, member) => sum + (member.last?.type === "drained" ? member.last.delivered : 0),
      0,
    );
    if (delivered !== tags) throw new Error(`steward bench --workers: drained ${delivered} of ${tags} tags`);
    return delivered / seconds;
  } finally {
    members.forEach((member) => member.command({ type: "stop" }));
    await Promise.all(members.map((member) => member.exited));
  }
}

/** Each fleet size in turn, `rounds` times; medians per size. */
export async function runFleet(
  url: string,
  sizes: number[],
  options: {
    quick: boolean;
    rounds: number;
    only?: string[];
    onRound?: (line: string) => void;
    /** Jobs, tags and the idle window of each round (tests make them small). */
    sizes?: { jobs: number; tags: number; idleMs: number };
  },
): Promise<FleetResult[]> {
  const client = new pg.Client({ connectionString: url, application_name: "steward bench fleet" });
  await client.connect();
  try {
    let counted: FleetResult["counted"] = "xact_commit";
    try {
      await client.query("create extension if not exists pg_stat_statements");
      await client.query("select from pg_stat_statements limit 1");
      counted = "pg_stat_statements";
    } catch {
      // Not preloaded: commits it is (every statement the fleet sends idle is its own transaction).
    }
    const { jobs, tags, idleMs } = options.sizes ?? {
      jobs: options.quick ? 8000 : 30_000,
      tags: options.quick ? 50_000 : 200_000,
      idleMs: 20_000,
    };
    const wants = (name: string) => !options.only || options.only.includes(name);
    const results: FleetResult[] = [];
    for (const workers of sizes) {
      const samples = { jobs: [] as number[], tags: [] as number[], connections: [] as number[], idle: [] as number[] };
      for (let round = 0; round < options.rounds; round++) {
        if (wants("jobs")) {
          const round_ = await jobsRound(url, workers, jobs, idleMs, client, counted);
          samples.jobs.push(round_.jobsPerSecond);
          samples.connections.push(round_.connections);
          samples.idle.push(round_.idleStatementsPerSecond);
        }
        if (wants("drain")) samples.tags.push(await drainRound(url, workers, tags, client));
        options.onRound?.(
          `  ${workers} worker(s), round ${round + 1}/${options.rounds}: ` +
            `jobs ${Math.round(samples.jobs.at(-1) ?? NaN)}/s, drain ${Math.round(samples.tags.at(-1) ?? NaN)} tags/s, ` +
            `${samples.connections.at(-1) ?? NaN} connections per worker, ${(samples.idle.at(-1) ?? NaN).toFixed(1)} idle statements/s`,
        );
      }
      results.push({
        workers,
        jobsPerSecond: medianOrNaN(samples.jobs),
        tagsPerSecond: medianOrNaN(samples.tags),
        connections: medianOrNaN(samples.connections),
        idleStatementsPerSecond: medianOrNaN(samples.idle),
        counted,
      });
    }
    return results;
  } finally {
    await client.end();
  }
}

function medianOrNaN(values: number[]): number {
  return values.length ? median(values) : NaN;
}
