import { Redis } from "ioredis";

export type { Redis };

/**
 * A Redis client that fails fast: with no offline queue, a command sent while
 * Redis is unreachable errors at once, so callers can fail closed (or open)
 * instead of hanging. Auto-pipelining batches the commands of concurrent calls.
 */
export async function connectRedis(url: string): Promise<Redis> {
  const redis = new Redis(url, {
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    lazyConnect: true,
    retryStrategy: (attempt) => Math.min(attempt * 100, 2000),
  });
  redis.on("error", () => {
    // Reported through failing commands and health checks; without a listener
    // ioredis would print every reconnection attempt.
  });
  await redis.connect();
  return redis;
}

export async function pingRedis(redis: Redis): Promise<void> {
  await redis.ping();
}
