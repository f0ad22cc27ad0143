import { SpanKind } from "@opentelemetry/api";
import type { RateLimitRule } from "../platform/config.js";
import { rateLimited, unavailable } from "../kernel/errors.js";
import type { Logger } from "../platform/logger.js";
import { rateLimitRefusals } from "../platform/metrics.js";
import type { RedisClient } from "../platform/redis.js";
import { inChildSpan, tracingOn } from "../platform/tracing.js";
import { gcra } from "./gcra.js";

export interface RateDecision {
  allowed: boolean;
  retryAfterMs: number;
}

export interface ConsumeOptions {
  /** Requests taken at once, or none (default 1). */
  cost?: number;
  /** Whether the count may be approximate for a while (see LeasingRateLimiter); otherwise every call is counted in the store. */
  leasable?: boolean;
}

/** Counts requests against a rule, shared by every instance that uses the same store. */
export interface RateLimiter {
  consume(key: string, limit: number, periodMs: number, options?: ConsumeOptions): Promise<RateDecision>;
}

/**
 * One rule for one key. When the store cannot be reached the rule decides:
 * limits that protect credentials fail closed (UNAVAILABLE), capacity limits fail open.
 */
export async function consumeRule(
  limiter: RateLimiter,
  name: string,
  rule: RateLimitRule,
  key: string,
  logger: Logger,
): Promise<RateDecision> {
  try {
    // A lease lets calls through after the store is gone: only for the limits that would let them through anyway.
    return await limiter.consume(`${name}:${key}`, rule.limit, rule.periodSeconds * 1000, { leasable: rule.failOpen });
  } catch (error) {
    if (rule.failOpen) {
      logger.warn({ err: error, rule: name }, "rate-limit store unreachable; failing open");
      return { allowed: true, retryAfterMs: 0 };
    }
    logger.error({ err: error, rule: name }, "rate-limit store unreachable; failing closed");
    throw unavailable("a safety check could not be made; retry shortly");
  }
}

/** One rule as a gate: passes, or throws RESOURCE_EXHAUSTED naming the rule (for limits applied by a handler, not the chain). */
export function ruleGate(limiter: RateLimiter, name: string, rule: RateLimitRule, logger: Logger): (key: string) => Promise<void> {
  return async (key) => {
    const decision = await consumeRule(limiter, name, rule, key, logger);
    if (decision.allowed) return;
    rateLimitRefusals.labels(name).inc();
    throw rateLimited(name, decision.retryAfterMs);
  };
}

/**
 * GCRA in one Lua script: read, decide and write happen atomically in Redis,
 * on Redis's clock, so any number of instances share one exact count. One key
 * per call, so it runs unchanged on Redis Cluster.
 */
const gcraScript = `
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local interval = period / limit
local stored = tonumber(redis.call('GET', KEYS[1]))
local tat = math.max(stored or now, now) + interval * cost
local ahead = tat - now
if ahead > period then
  return math.ceil(ahead - period)
end
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(ahead))
return 0
`;

type RedisWithGcra = RedisClient & { portcullisGcra(key: string, limit: number, periodMs: number, cost: number): Promise<number> };

export class RedisRateLimiter implements RateLimiter {
  private readonly redis: RedisWithGcra;

  constructor(redis: RedisClient, private readonly prefix: string) {
    if (!("portcullisGcra" in redis)) redis.defineCommand("portcullisGcra", { numberOfKeys: 1, lua: gcraScript });
    this.redis = redis as RedisWithGcra;
  }

  async consume(key: string, limit: number, periodMs: number, { cost = 1 }: ConsumeOptions = {}): Promise<RateDecision> {
    const storeKey = `${this.prefix}rl:{${key}}`;
    const retryAfterMs = await (tracingOn ? this.tracedGcra(key, storeKey, limit, periodMs, cost) : this.redis.portcullisGcra(storeKey, limit, periodMs, cost));
    return { allowed: retryAfterMs === 0, retryAfterMs };
  }

  /** Named by the rule only: the rest of the key is an IP, a user id or a hash standing for a phone number. */
  private tracedGcra(key: string, storeKey: string, limit: number, periodMs: number, cost: number): Promise<number> {
    const attributes = { "portcullis.rate_limit.rule": key.slice(0, key.indexOf(":")) };
    return inChildSpan("rate_limit", SpanKind.INTERNAL, attributes, () => this.redis.portcullisGcra(storeKey, limit, periodMs, cost));
  }
}

/** The embedded single-instance store: the same algorithm over a Map. */
export class MemoryRateLimiter implements RateLimiter {
  private readonly tats = new Map<string, { tat: number; periodMs: number }>();
  private consumedSincePrune = 0;

  constructor(private readonly now: () => number = Date.now) {}

  async consume(key: string, limit: number, periodMs: number, { cost = 1 }: ConsumeOptions = {}): Promise<RateDecision> {
    const now = this.now();
    if (++this.consumedSincePrune >= 10_000) this.prune(now);
    const decision = gcra(this.tats.get(key)?.tat, now, limit, periodMs, cost);
    if (decision.allowed) this.tats.set(key, { tat: decision.tat, periodMs });
    return decision;
  }

  private prune(now: number): void {
    this.consumedSincePrune = 0;
    for (const [key, entry] of this.tats) if (entry.tat <= now) this.tats.delete(key);
  }
}

/** Leasable limits at least this high are taken in leases; lower ones stay exact per call. */
const leaseFromLimit = 100;
const leaseLifetimeMs = 1000;

/**
 * High-volume limits (1000 calls a minute per user) would cost a Redis round
 * trip on every call. Instead an instance takes a lease of 1% of the limit in
 * one atomic step and spends it locally for at most a second. Leases come out
 * of the same shared bucket, so all instances together still never exceed the
 * limit; unused lease is lost, so near the limit a caller may be refused up to
 * 1% early. When a lease is refused, calls fall back to exact counting. Small
 * limits, and limits that protect credentials (codes, logins, sends) whatever
 * their size, are always counted exactly, call by call: a lease would keep
 * letting calls through for up to a second after the store is gone.
 */
export class LeasingRateLimiter implements RateLimiter {
  private readonly leases = new Map<string, { remaining: number; expiresAt: number }>();
  private readonly pending = new Map<string, Promise<RateDecision>>();

  constructor(private readonly store: RateLimiter, private readonly now: () => number = Date.now) {}

  async consume(key: string, limit: number, periodMs: number, options: ConsumeOptions = {}): Promise<RateDecision> {
    if (!options.leasable || limit < leaseFromLimit) return this.store.consume(key, limit, periodMs, options);
    const now = this.now();
    const lease = this.leases.get(key);
    if (lease && lease.expiresAt > now && lease.remaining > 0) {
      lease.remaining--;
      return { allowed: true, retryAfterMs: 0 };
    }
    // One lease request per key at a time; concurrent calls wait for it, then try again.
    const inFlight = this.pending.get(key);
    if (inFlight) {
      await inFlight;
      return this.consume(key, limit, periodMs, options);
    }
    const size = Math.floor(limit / leaseFromLimit);
    const request = this.store.consume(key, limit, periodMs, { cost: size }).finally(() => this.pending.delete(key));
    this.pending.set(key, request);
    const decision = await request;
    if (!decision.allowed) return this.store.consume(key, limit, periodMs);
    if (this.leases.size >= 100_000) this.prune(now);
    this.leases.set(key, { remaining: size - 1, expiresAt: now + leaseLifetimeMs });
    return decision;
  }

  private prune(now: number): void {
    for (const [key, lease] of this.leases) if (lease.expiresAt <= now) this.leases.delete(key);
  }
}
