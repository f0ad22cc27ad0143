import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { normalizeEmail } from "../auth/email.js";
import { phoneLimitKey } from "../auth/phone.js";
import type { UnaryHandler } from "../kernel/call.js";
import { serviceNamePattern } from "../kernel/validation.js";
import { captchaTestTokenLongEnough, defaultRateLimits, minCaptchaTestTokenLength, sessionFeedKeys, sharedDefaults, type CaptchaConfig, type Config, type RateLimitRule } from "../platform/config.js";
import type { Dispatch } from "../platform/incoming-call.js";
import { createLogger, type Logger } from "../platform/logger.js";
import { isLoopbackHost } from "../platform/loopback.js";
import { connectRedis, type RedisClient } from "../platform/redis.js";
import { startTracing } from "../platform/tracing.js";
import { readPolicies, type MethodPolicy } from "../policy/access.js";
import { captchaGateFor, type CaptchaGate } from "../policy/captcha-gate.js";
import { RedisFailureCounter } from "../policy/failure-counter.js";
import { Chain } from "../policy/chain.js";
import { ClientIpResolver } from "../policy/client-ip.js";
import { LeasingRateLimiter, RedisRateLimiter } from "../policy/rate-limiter.js";
import { backlogEvents, RevocationFeed, type FeedChannel } from "../session/feed.js";
import { TokenVerifier } from "../tokens/access-token.js";
import { CaptchaRequirement } from "../../gen/portcullis/v1/policy_pb.js";
import { RemoteJwks } from "../tokens/remote-jwks.js";
import { sharedLimitKeySecret } from "./limit-key-secret.js";

export interface GuardOptions {
  /** This service's name, as its service account is named: the audience tokens for it carry. */
  name: string;
  /**
   * The audiences a token may name to be accepted here: by default only
   * `name`, so a token meant for another service (Portcullis itself
   * included) does not replay here.
   */
  audiences?: string[];
  /** The service's own services; each method declares (portcullis.v1.access) like ours. */
  services: readonly DescService[];
  /** Portcullis's JWKS, e.g. https://portcullis.internal/.well-known/jwks.json; plain http only on loopback. */
  jwksUrl: string;
  issuer?: string;
  /**
   * Portcullis's ACCESS_TOKEN_TTL_SECONDS: a token that lives longer is refused.
   * Defaults to the longest Portcullis can be configured with.
   */
  maxTokenLifetimeSeconds?: number;
  /** The Redis Portcullis uses: revocations and KYC downgrades arrive there, and limits are counted there. */
  redisUrl: string;
  redisCluster?: boolean;
  /** Portcullis's REDIS_KEY_PREFIX, for its session-change feed. */
  portcullisKeyPrefix?: string;
  /** Where this service keeps its own rate-limit counters (and its limit-key secret); `guard:<name>:` by default. */
  limitKeyPrefix?: string;
  /**
   * Hides phone numbers and emails in limit keys; the same for every instance
   * of this service. Without it, one is made at random and kept in Redis, at
   * `<limitKeyPrefix>limit-key-secret`.
   */
  limitKeySecret?: Buffer;
  /**
   * An override, seldom needed: how long the revocation feed may be silent
   * (no change, no heartbeat from Portcullis) before user calls are refused.
   * By default three of the heartbeat intervals Portcullis announces
   * (FEED_HEARTBEAT_SECONDS), so the two cannot disagree. Either way silence
   * counts only once a first heartbeat is heard: a Portcullis older than
   * heartbeats never sends one.
   */
  feedHeartbeatTimeoutMs?: number;
  rateLimits?: Record<string, RateLimitRule>;
  trustedProxies?: string[];
  logger?: Logger;
  /**
   * Where this service sends its spans (an OTLP/HTTP traces URL) and under
   * what service name: each call then gets a span that continues the
   * caller's trace (its `traceparent`), with the guard's steps under it.
   */
  tracing?: Config["tracing"];
  /**
   * Checks the captcha that methods declare (`captcha` in their access
   * policy), as Portcullis's CAPTCHA_* settings do. Required when a method
   * declares one: start-up fails without it. `"none"` serves those methods
   * unchecked, said in so many words.
   */
  captcha?: CaptchaConfig | "none";
}

export interface Guard {
  /** Runs each call through the chain, then the service's handler for its method. */
  dispatch(handlers: Map<DescMethod, UnaryHandler>): Dispatch;
  close(): Promise<void>;
}

/**
 * The Portcullis chain for another Node service: the same access policies,
 * read from its own proto's method options; tokens verified against
 * Portcullis's JWKS over HTTP; revocations and KYC downgrades received from
 * Portcullis's Redis feed, failing closed while it cannot be confirmed.
 */
export async function createGuard(options: GuardOptions): Promise<Guard> {
  const audiences = checkOptions(options);
  const logger = options.logger ?? createLogger("info");
  const policies = readPolicies(options.services, options.rateLimits ?? defaultRateLimits);
  checkCaptchaOption(options.captcha, policies);
  const redis = await connectRedis(options.redisUrl, options.redisCluster ?? false);
  // Per service by default: two services on one Redis must not share their counters.
  const limitKeyPrefix = options.limitKeyPrefix ?? `guard:${options.name}:`;
  const channel: FeedChannel = { client: redis, ...sessionFeedKeys(options.portcullisKeyPrefix ?? sharedDefaults.redisKeyPrefix) };
  const feed = new RevocationFeed(backlogEvents(channel), logger, channel, {
    watchesSilence: true,
    silenceTimeoutMs: options.feedHeartbeatTimeoutMs,
  });
  const jwks = new RemoteJwks(options.jwksUrl, logger);
  let limitKeySecret: Buffer;
  try {
    limitKeySecret = options.limitKeySecret ?? (await sharedLimitKeySecret(redis, `${limitKeyPrefix}limit-key-secret`));
    await feed.start();
    await jwks.refresh();
  } catch (error) {
    // An open connection would keep the host process alive after its start-up failed.
    await feed.stop();
    redis.disconnect();
    throw error;
  }
  const chain = new Chain({
    policies,
    limiter: new LeasingRateLimiter(new RedisRateLimiter(redis, limitKeyPrefix)),
    tokens: new TokenVerifier(jwks, {
      issuer: options.issuer ?? sharedDefaults.issuer,
      audience: audiences,
      clockToleranceSeconds: sharedDefaults.clockToleranceSeconds,
      verifiedCacheSize: sharedDefaults.verifiedCacheSize,
      maxLifetimeSeconds: options.maxTokenLifetimeSeconds ?? sharedDefaults.maxAccessTokenTtlSeconds,
    }),
    sessions: feed,
    clientIp: new ClientIpResolver(options.trustedProxies ?? []),
    limitKeyForms: { phone: phoneLimitKey, email: normalizeEmail },
    limitKeySecret,
    onLimited: (hit) => logger.warn({ rule: hit.rule, ip: hit.clientIp, rid: hit.requestId }, "rate limit hit"),
    captcha: captchaGate(options.captcha, redis, limitKeyPrefix, logger),
    onCaptchaRefused: (refusal) => logger.warn({ method: refusal.method, cause: refusal.cause, ip: refusal.clientIp, rid: refusal.requestId }, "captcha refused"),
    logger,
  });
  const stopTracing = options.tracing ? startTracing(options.tracing, logger) : async () => {};
  return {
    dispatch: (handlers) => async (incoming, request) => {
      const handler = handlers.get(incoming.method);
      if (!handler) throw new Error(`${incoming.method.name} has no handler`);
      return chain.run(incoming, request, handler);
    },
    async close() {
      await feed.stop();
      redis.disconnect();
      await stopTracing();
    },
  };
}

/** Like a method without a policy: a captcha the contract declares is never skipped unless the service says so. */
function checkCaptchaOption(config: GuardOptions["captcha"], policies: Map<DescMethod, MethodPolicy>): void {
  if (typeof config === "object" && config.testToken !== undefined && !captchaTestTokenLongEnough(config.testToken)) {
    throw new Error(`captcha.testToken: at least ${minCaptchaTestTokenLength} characters, as CAPTCHA_TEST_TOKEN`);
  }
  if (config) return;
  const declaring = [...policies.values()].filter((policy) => policy.captcha !== CaptchaRequirement.UNSPECIFIED).map((policy) => policy.path);
  if (declaring.length > 0) {
    throw new Error(`captcha: ${declaring.join(", ")} declare a captcha; configure one, or pass captcha: "none" to serve them unchecked`);
  }
}

function captchaGate(config: GuardOptions["captcha"], redis: RedisClient, limitKeyPrefix: string, logger: Logger): CaptchaGate | undefined {
  if (!config || config === "none") return undefined;
  return captchaGateFor(config, new RedisFailureCounter(redis, limitKeyPrefix), logger);
}

/** Refuses, before connecting to anything, a guard that would accept what it should not; returns the audiences it accepts. */
function checkOptions(options: GuardOptions): string[] {
  if (!serviceNamePattern.test(options.name)) {
    throw new Error(`name: "${options.name}" is not a service name (2 to 63 lowercase letters, digits and dashes, starting with a letter)`);
  }
  const audiences = options.audiences ?? [options.name];
  if (audiences.length === 0) throw new Error("audiences: name at least one, or leave it out to accept tokens for this service's name");
  const timeoutMs = options.feedHeartbeatTimeoutMs;
  if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new Error("feedHeartbeatTimeoutMs: a positive number of milliseconds, or leave it out to follow Portcullis's heartbeats");
  }
  let url: URL;
  try {
    url = new URL(options.jwksUrl);
  } catch {
    throw new Error("jwksUrl: not a URL");
  }
  // Whoever can alter the key set in transit can sign any token we accept.
  if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopbackHost(url.hostname))) {
    throw new Error(`jwksUrl: must be https (plain http only on loopback), not ${url.protocol}//${url.host}`);
  }
  return audiences;
}

export { createGrpcServer } from "../platform/grpc-server.js";
export type { UnaryHandler } from "../kernel/call.js";
export { injectTraceContext } from "../platform/tracing.js";
