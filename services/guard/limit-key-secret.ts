import { randomBytes } from "node:crypto";
import type { RedisClient } from "../platform/redis.js";

/**
 * The secret that hides phone numbers and emails in a service's limit keys,
 * the same for all its instances: the first to start makes it, the rest read
 * it. Nobody outside the service and its Redis can compute a key from a
 * number, so the keys say nothing of who was limited.
 *
 * Each instance reads it once, as it starts: after Redis is flushed (or loses
 * the key) the next instance to start makes another, and until the others
 * restart the same number counts under two keys: its limits split in two.
 * A guard given its `limitKeySecret` has no such gap.
 */
export async function sharedLimitKeySecret(redis: RedisClient, key: string): Promise<Buffer> {
  await redis.set(key, randomBytes(32).toString("base64"), "NX");
  const secret = await redis.get(key);
  if (!secret) throw new Error(`the limit-key secret at ${key} vanished as it was made; start again`);
  return Buffer.from(secret, "base64");
}
