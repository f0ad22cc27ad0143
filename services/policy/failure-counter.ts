import type { RedisClient } from "../platform/redis.js";

/**
 * Counts recent failures per key in a fixed window that starts with the
 * key's first failure; shared by every instance that uses the same store.
 */
export interface FailureCounter {
  add(key: string, windowMs: number): Promise<void>;
  /** Failures of the key in its current window; 0 once the window has passed. */
  count(key: string): Promise<number>;
}

/** INCR and the first failure's expiry in one step, so a key can never be left without an expiry. */
const addScript = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
`;

type RedisWithFailures = RedisClient & { portcullisAddFailure(key: string, windowMs: number): Promise<number> };

export class RedisFailureCounter implements FailureCounter {
  private readonly redis: RedisWithFailures;

  constructor(redis: RedisClient, private readonly prefix: string) {
    if (!("portcullisAddFailure" in redis)) redis.defineCommand("portcullisAddFailure", { numberOfKeys: 1, lua: addScript });
    this.redis = redis as RedisWithFailures;
  }

  async add(key: string, windowMs: number): Promise<void> {
    await this.redis.portcullisAddFailure(this.storeKey(key), windowMs);
  }

  async count(key: string): Promise<number> {
    return Number((await this.redis.get(this.storeKey(key))) ?? 0);
  }

  private storeKey(key: string): string {
    return `${this.prefix}fail:{${key}}`;
  }
}

/** The embedded single-instance store: the same windows over a Map. */
export class MemoryFailureCounter implements FailureCounter {
  private readonly windows = new Map<string, { count: number; endsAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  async add(key: string, windowMs: number): Promise<void> {
    const now = this.now();
    const window = this.windows.get(key);
    if (window && window.endsAt > now) {
      window.count++;
      return;
    }
    if (this.windows.size >= 100_000) this.prune(now);
    this.windows.set(key, { count: 1, endsAt: now + windowMs });
  }

  async count(key: string): Promise<number> {
    const window = this.windows.get(key);
    return window && window.endsAt > this.now() ? window.count : 0;
  }

  private prune(now: number): void {
    for (const [key, window] of this.windows) if (window.endsAt <= now) this.windows.delete(key);
  }
}
