import { Cluster, Redis, type Command } from "ioredis";
import { sharedDefaults } from "./config.js";
import { redisCommandDuration, redisErrors } from "./metrics.js";

/** A single Redis or a Redis Cluster: every key we use is hash-tagged, so each script touches one slot. */
export type RedisClient = Redis | Cluster;

const commonOptions = {
  enableAutoPipelining: true,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  lazyConnect: true,
};

/**
 * A client that fails fast: with no offline queue, a command sent while Redis
 * is unreachable errors at once, and one Redis does not answer (it is paused,
 * overloaded, or the connection is half-open) errors after `commandTimeoutMs`,
 * so callers can fail closed (or open) instead of hanging. Auto-pipelining
 * batches the commands of concurrent calls.
 * `urls` is one URL, or the comma-separated seed nodes of a cluster.
 */
export async function connectRedis(
  urls: string,
  cluster: boolean,
  commandTimeoutMs: number = sharedDefaults.redisCommandTimeoutMs,
): Promise<RedisClient> {
  const retryStrategy = (attempt: number) => Math.min(attempt * 100, 2000);
  const redis: RedisClient = cluster
    ? new Cluster(
        urls.split(",").map((url) => {
          const { hostname, port } = new URL(url.trim());
          return { host: hostname, port: Number(port || 6379) };
        }),
        // Cluster commands run on its per-node clients: the timeout belongs in their options.
        { ...commonOptions, clusterRetryStrategy: retryStrategy, redisOptions: { maxRetriesPerRequest: 1, commandTimeout: commandTimeoutMs } },
      )
    : new Redis(urls, { ...commonOptions, commandTimeout: commandTimeoutMs, retryStrategy });
  measureCommands(redis);
  redis.on("error", () => {
    // Reported through failing commands and health checks; without a listener
    // ioredis would print every reconnection attempt.
  });
  try {
    await redis.connect();
  } catch (error) {
    // Or it would go on reconnecting, unowned, and keep the process alive.
    redis.disconnect();
    throw error;
  }
  return redis;
}

interface CommandSeries {
  duration: ReturnType<typeof redisCommandDuration.labels>;
  errors: ReturnType<typeof redisErrors.labels>;
}

/** By command name, which ioredis takes from its own list. */
const commandSeries = new Map<string, CommandSeries>();
/** A command can pass through sendCommand again (the offline queue, a resend after reconnecting): it is timed once. */
const timedCommands = new WeakSet<Command>();

/**
 * ioredis has no per-command hook, but every command of the client, pipelined
 * or not, goes through its sendCommand: times each from there to its reply or
 * failure (a timeout included).
 */
function measureCommands(redis: RedisClient): void {
  const send = redis.sendCommand.bind(redis) as (command: Command, stream?: unknown, node?: unknown) => unknown;
  redis.sendCommand = (command: Command, stream?: unknown, node?: unknown) => {
    if (timedCommands.has(command)) return send(command, stream, node);
    timedCommands.add(command);
    const started = performance.now();
    const result = send(command, stream, node);
    let series = commandSeries.get(command.name);
    if (!series) {
      series = { duration: redisCommandDuration.labels(command.name), errors: redisErrors.labels(command.name) };
      commandSeries.set(command.name, series);
    }
    const { duration, errors } = series;
    command.promise.then(
      () => duration.observe((performance.now() - started) / 1000),
      () => {
        duration.observe((performance.now() - started) / 1000);
        errors.inc();
      },
    );
    return result;
  };
}

export async function pingRedis(redis: RedisClient): Promise<void> {
  await redis.ping();
}

/**
 * A second connection for pub/sub (a subscribed connection can do nothing
 * else); it queues while reconnecting. It keeps the command timeout: that
 * times only commands awaiting a reply (a SUBSCRIBE the feed then retries),
 * never the idle wait for messages.
 */
export function subscriberConnection(redis: RedisClient): RedisClient {
  const options = { enableOfflineQueue: true, lazyConnect: true };
  return redis instanceof Cluster ? redis.duplicate(undefined, options) : redis.duplicate(options);
}
