import { Cluster, Redis } from "ioredis";

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
 * is unreachable errors at once, so callers can fail closed (or open) instead
 * of hanging. Auto-pipelining batches the commands of concurrent calls.
 * `urls` is one URL, or the comma-separated seed nodes of a cluster.
 */
export async function connectRedis(urls: string, cluster: boolean): Promise<RedisClient> {
  const retryStrategy = (attempt: number) => Math.min(attempt * 100, 2000);
  const redis: RedisClient = cluster
    ? new Cluster(
        urls.split(",").map((url) => {
          const { hostname, port } = new URL(url.trim());
          return { host: hostname, port: Number(port || 6379) };
        }),
        { ...commonOptions, clusterRetryStrategy: retryStrategy, redisOptions: { maxRetriesPerRequest: 1 } },
      )
    : new Redis(urls, { ...commonOptions, retryStrategy });
  redis.on("error", () => {
    // Reported through failing commands and health checks; without a listener
    // ioredis would print every reconnection attempt.
  });
  await redis.connect();
  return redis;
}

export async function pingRedis(redis: RedisClient): Promise<void> {
  await redis.ping();
}

/** A second connection for pub/sub (a subscribed connection can do nothing else); it queues while reconnecting. */
export function subscriberConnection(redis: RedisClient): RedisClient {
  const options = { enableOfflineQueue: true, lazyConnect: true };
  return redis instanceof Cluster ? redis.duplicate(undefined, options) : redis.duplicate(options);
}
