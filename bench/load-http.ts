// The load test's HTTP driver: the Recall example served on loopback from a scratch database
// (migrated, with a worker delivering invalidations through the notify sink), and simulated
// users calling it the way the checklist's k6 script does: each user owns a thread, and calls
// resolve, a page of its messages, or a batch insert. A 429 is not an error: the runner counts
// it apart (RateLimited), as k6's script does with its own check.
import http from "node:http";
import { createPool } from "../src/database.ts";
import type { Config } from "../src/config.ts";
import type { Logger } from "../src/logger.ts";
import { startWorker } from "../src/worker/runner.ts";
import { FakeApis } from "../examples/recall/fake-apis.ts";
import { installRecall } from "../examples/recall/index.ts";
import { RecallService } from "../examples/recall/service.ts";
import { RateLimited, type LoadDriver, type LoadOperation } from "./load.ts";
import { scratchDatabase } from "./scratch.ts";

/** An answer the run counts as a failure: a status other than 2xx and 429, or no answer. */
class HttpFailure extends Error {}

interface Answer {
  status: number;
  body: string;
}

function requester(port: number, agent: http.Agent) {
  return (user: number, method: string, path: string, body?: unknown): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const request = http.request(
        {
          host: "127.0.0.1",
          port,
          method,
          path,
          agent,
          headers: {
            "x-user-id": `vu-${user}`,
            ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}),
          },
        },
        (response) => {
          let text = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => (text += chunk));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }));
          response.on("error", reject);
        },
      );
      request.on("error", reject);
      request.end(payload);
    });
}

function checked(answer: Answer, what: string): Answer {
  if (answer.status === 429) throw new RateLimited();
  if (answer.status < 200 || answer.status > 299) {
    throw new HttpFailure(`${what} answered ${answer.status}: ${answer.body.slice(0, 200)}`);
  }
  return answer;
}

function operations(call: ReturnType<typeof requester>): LoadOperation[] {
  /** Each user's thread, made on its first call (that call counts against its limits too). */
  const threads = new Map<number, Promise<string>>();
  const threadOf = (user: number) => {
    let thread = threads.get(user);
    if (!thread) {
      thread = call(user, "POST", "/threads", { title: `load ${user}` }).then(
        (answer) => JSON.parse(checked(answer, "POST /threads").body).id as string,
      );
      thread.catch(() => threads.delete(user));
      threads.set(user, thread);
    }
    return thread;
  };
  return [
    {
      name: "message_page",
      weight: 75,
      async run(user) {
        const thread = await threadOf(user);
        checked(await call(user, "GET", `/threads/${thread}/messages?limit=50`), "GET messages");
      },
    },
    {
      name: "resolve",
      weight: 15,
      async run(user) {
        const thread = await threadOf(user);
        const body = Math.random() < 0.3 ? { audio: "hum of a song" } : { text: "what did I say yesterday?" };
        checked(await call(user, "POST", `/threads/${thread}/resolve`, body), "POST resolve");
      },
    },
    {
      name: "batch",
      weight: 10,
      async run(user) {
        const thread = await threadOf(user);
        const messages = Array.from({ length: 10 }, (_, i) => ({ message_type: "user", content: `note ${i}` }));
        checked(await call(user, "POST", `/threads/${thread}/messages`, { messages }), "POST messages");
      },
    },
  ];
}

export interface HttpDriver extends LoadDriver {
  /** The service's cache counters so far (for the hit rate of each stage). */
  cache(): { hits: number; misses: number };
}

export async function startHttpDriver(options: {
  url: string;
  config: Config;
  logger: Logger;
  connections: number;
}): Promise<HttpDriver> {
  const scratch = await scratchDatabase(options.url, options.logger, "load");
  try {
    const worker = await startWorker({
      url: scratch.url,
      config: { ...options.config, concurrency: 2, sinks: ["notify"] },
      logger: options.logger,
      health: false,
    });
    const pool = createPool(scratch.url, { max: options.connections, applicationName: "steward load recall" });
    await installRecall(pool);
    const service = new RecallService({
      pool,
      url: scratch.url,
      logger: options.logger,
      apis: new FakeApis(),
      channel: options.config.notifyChannel,
    });
    const port = await service.listen(0, "127.0.0.1");
    const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
    return {
      operations: operations(requester(port, agent)),
      cache: () => ({ hits: service.cache.hits, misses: service.cache.misses }),
      async stop() {
        try {
          agent.destroy();
          await service.stop();
          await pool.end();
          await worker.stop("load test over");
        } finally {
          await scratch.drop();
        }
      },
    };
  } catch (error) {
    await scratch.drop();
    throw error;
  }
}
