import { Cluster, Redis } from "ioredis";
import { sharedDefaults } from "./config.js";

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
