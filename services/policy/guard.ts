import { createHash } from "node:crypto";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { defaultRateLimits, type RateLimitRule } from "../platform/config.js";
import { createLogger, type Logger } from "../platform/logger.js";
import { connectRedis } from "../platform/redis.js";
import { backlogEvents, RevocationFeed, type FeedChannel } from "../session/revocation-feed.js";
import { TokenVerifier } from "../tokens/access-token.js";
import { RemoteJwks } from "../tokens/remote-jwks.js";
import { readPolicies } from "./access.js";
import type { Dispatch, UnaryHandler } from "./call.js";
import { Chain } from "./chain.js";
import { ClientIpResolver } from "./client-ip.js";
import { LeasingRateLimiter, RedisRateLimiter } from "./rate-limiter.js";

export interface GuardOptions {
  /** The service's own services; each method declares (portcullis.v1.access) like ours. */
  services: readonly DescService[];
  /** Portcullis's JWKS, e.g. http://portcullis:8080/.well-known/jwks.json */
  jwksUrl: string;
  issuer?: string;
  audience?: string;
  /** The Redis Portcullis uses: revocations and KYC downgrades arrive there, and limits are counted there. */
  redisUrl: string;
  redisCluster?: boolean;
  /** Portcullis's REDIS_KEY_PREFIX, for its session-change feed. */
  portcullisKeyPrefix?: string;
  /** Where this service keeps its own rate-limit counters. */
  limitKeyPrefix?: string;
  rateLimits?: Record<string, RateLimitRule>;
  trustedProxies?: string[];
  logger?: Logger;
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
  const logger = options.logger ?? createLogger("info");
  const policies = readPolicies(options.services, options.rateLimits ?? defaultRateLimits);
  const redis = await connectRedis(options.redisUrl, options.redisCluster ?? false);
  const prefix = options.portcullisKeyPrefix ?? "portcullis:";
  const channel: FeedChannel = { client: redis, channel: `${prefix}session-changes`, backlog: `${prefix}session-changes:backlog` };
  const feed = new RevocationFeed(backlogEvents(channel), logger, channel);
  await feed.start();
  const jwks = new RemoteJwks(options.jwksUrl);
  await jwks.refresh();
  const chain = new Chain({
    policies,
    limiter: new LeasingRateLimiter(new RedisRateLimiter(redis, options.limitKeyPrefix ?? "guard:")),
    tokens: new TokenVerifier(jwks, {
      issuer: options.issuer ?? "portcullis",
      audience: options.audience ?? "portcullis",
      clockToleranceSeconds: 5,
      verifiedCacheSize: 10_000,
    }),
    sessions: feed,
    clientIp: new ClientIpResolver(options.trustedProxies ?? []),
    // Hides phone numbers and emails in limit keys; the same for every instance of this service.
    limitKeySecret: createHash("sha256").update(`portcullis-guard:${options.jwksUrl}`).digest(),
    onLimited: (hit) => logger.warn({ rule: hit.rule, ip: hit.clientIp, rid: hit.requestId }, "rate limit hit"),
    logger,
  });
  return {
    dispatch: (handlers) => async (incoming, request) => {
      const handler = handlers.get(incoming.method);
      if (!handler) throw new Error(`${incoming.method.name} has no handler`);
      return chain.run(incoming, request, handler);
    },
    async close() {
      await feed.stop();
      redis.disconnect();
    },
  };
}

export { createGrpcServer } from "../platform/grpc-server.js";
export type { UnaryHandler } from "./call.js";
