import { ConfigError, loadConfig } from "../platform/config.js";
import { createLogger } from "../platform/logger.js";
import { PolicyError } from "../policy/access.js";
import { startServers } from "./servers.js";

let config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`portcullis: bad configuration: ${error.message}`);
  process.exit(2);
}
const logger = createLogger(config.logLevel);

try {
  const running = await startServers(config, logger);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    running.stop().then(
      () => { logger.flush(); process.exit(0); },
      (error) => { logger.error({ err: error }, "shutdown failed"); logger.flush(); process.exit(1); },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
} catch (error) {
  if (error instanceof PolicyError) logger.fatal(`access policy: ${error.message}`);
  else logger.fatal({ err: error }, "start-up failed");
  logger.flush();
  process.exit(1);
}
