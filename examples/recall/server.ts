// `node examples/recall/server.ts` (or `npx steward example run recall`): installs the Recall
// example on DATABASE_URL when it is missing and serves it on 127.0.0.1:RECALL_PORT (default
// 8080) until SIGINT/SIGTERM. Cache invalidations arrive from a steward worker with the notify
// sink (`npx steward worker` on the same database), on STEWARD_NOTIFY_CHANNEL.
import { createPool } from "../../src/database.ts";
import { createLogger, type Logger } from "../../src/logger.ts";
import { FakeApis } from "./fake-apis.ts";
import { installRecall } from "./index.ts";
import { RecallService } from "./service.ts";

export interface RunRecallOptions {
  url: string;
  port: number;
  host?: string;
  channel?: string;
  logger: Logger;
}

/** Installs (idempotent) and serves until `stop()`. */
export async function runRecall(options: RunRecallOptions) {
  const pool = createPool(options.url, { max: 20, applicationName: "recall", actor: "example:recall" });
  await installRecall(pool);
  const service = new RecallService({
    pool,
    url: options.url,
    logger: options.logger,
    apis: new FakeApis(),
    channel: options.channel,
  });
  const port = await service.listen(options.port, options.host ?? "127.0.0.1");
  options.logger.info({ port }, `recall service on http://${options.host ?? "127.0.0.1"}:${port}`);
  return {
    service,
    port,
    async stop() {
      await service.stop();
      await pool.end();
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const url = process.env.DATABASE_URL;
  const logger = createLogger(process.env.LOG_LEVEL ?? "info");
  if (!url) {
    logger.error("DATABASE_URL must name the database (the one steward migrated)");
    process.exit(2);
  }
  const running = await runRecall({
    url,
    port: Number(process.env.RECALL_PORT ?? 8080),
    channel: process.env.STEWARD_NOTIFY_CHANNEL,
    logger,
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void running.stop().then(() => process.exit(0)));
  }
}
