import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { Config } from "./platform/config.js";
import { Database } from "./platform/database.js";
import { embeddedKeyEncryptionKey, startEmbeddedPostgres } from "./platform/embedded.js";
import { deriveKey, Envelope } from "./platform/envelope.js";
import type { Logger } from "./platform/logger.js";
import { connectRedis, pingRedis, type RedisClient } from "./platform/redis.js";
import { readPolicies } from "./policy/access.js";
import type { Dispatch, UnaryHandler } from "./policy/call.js";
import { Chain } from "./policy/chain.js";
import { ClientIpResolver } from "./policy/client-ip.js";
import { auditLimitHits } from "./policy/limit-audit.js";
import { consumeRule, LeasingRateLimiter, MemoryRateLimiter, RedisRateLimiter } from "./policy/rate-limiter.js";
import { rateLimited } from "./platform/errors.js";
import { AccessTokens } from "./tokens/access-token.js";
import { KeyRing } from "./tokens/key-ring.js";
import { RefreshRotation } from "./tokens/refresh.js";
import { RefreshTokens } from "./tokens/refresh-token.js";
import { RevocationFeed, type FeedChannel } from "./session/revocation-feed.js";
import { Sessions } from "./session/sessions.js";
import { SessionGuard } from "./session/session-guard.js";
import { Cleanup } from "./session/cleanup.js";
import { authHandlers } from "./auth/handlers.js";
import { OtpSignIn } from "./auth/otp.js";
import { PasswordSignIn } from "./auth/password-sign-in.js";
import { createSmsProvider } from "./auth/sms.js";
import { sessionHandlers } from "./session/handlers.js";
import { kycHandlers } from "./kyc/handlers.js";
import { Kyc } from "./kyc/kyc.js";
import { AuthService } from "../gen/portcullis/v1/auth_service_pb.js";
import { SessionService } from "../gen/portcullis/v1/session_service_pb.js";
import { KycService } from "../gen/portcullis/v1/kyc_service_pb.js";

export const services: readonly DescService[] = [AuthService, SessionService, KycService];

/** Everything a serving instance holds: stores, key ring, chain and handlers. */
export interface App {
  db: Database;
  redis?: RedisClient;
  keyRing: KeyRing;
  tokens: AccessTokens;
  revocations: RevocationFeed;
  sessionGuard: SessionGuard;
  cleanup: Cleanup;
  chain: Chain;
  dispatch: Dispatch;
  /** True while Postgres and Redis (when used) answer. */
  ready(): Promise<boolean>;
  close(): Promise<void>;
}

export async function createApp(config: Config, logger: Logger): Promise<App> {
  // Read before any connection is made: a bad contract should fail fast.
  const policies = readPolicies(services, config.rateLimits);
  const closers: (() => Promise<void> | void)[] = [];
  try {
    let database = config.databaseUrl && { url: config.databaseUrl, options: { poolSize: config.databasePoolSize, prepare: true } };
    let keyEncryptionKey = config.keyEncryptionKey;
    let redis: RedisClient | undefined;
    if (!database) {
      logger.warn(
        { dataDir: config.dataDir },
        "no DATABASE_URL and no REDIS_URL: running on the embedded default (PGlite and in-process stores). " +
          "This is a SINGLE-INSTANCE mode: do not run several instances on it or use it in production",
      );
      const embedded = await startEmbeddedPostgres(config.dataDir);
      closers.push(() => embedded.stop());
      database = embedded;
      keyEncryptionKey ??= embeddedKeyEncryptionKey(config.dataDir, logger);
    } else {
      redis = await connectRedis(config.redisUrl!, config.redisCluster);
      closers.push(() => void redis!.disconnect());
    }
    const db = await Database.open(database.url, logger, database.options);
    closers.push(() => db.close());

    const keyRing = new KeyRing(
      db,
      new Envelope(keyEncryptionKey!, "signing-keys"),
      config.jwt.algorithm,
      {
        rotationIntervalSeconds: config.keys.rotationIntervalSeconds,
        publishLeadSeconds: config.keys.publishLeadSeconds,
        verifyGraceSeconds: config.jwt.accessTokenTtlSeconds + config.jwt.clockToleranceSeconds,
      },
      logger,
    );
    await keyRing.start();
    closers.push(() => keyRing.stop());

    const tokens = new AccessTokens(keyRing, {
      issuer: config.jwt.issuer,
      audience: config.jwt.audience,
      ttlSeconds: config.jwt.accessTokenTtlSeconds,
      clockToleranceSeconds: config.jwt.clockToleranceSeconds,
      verifiedCacheSize: config.jwt.verifiedCacheSize,
    });
    // An access token outlives the revocation of its session by at most this much.
    const accessTokenLifetimeMs = (config.jwt.accessTokenTtlSeconds + config.jwt.clockToleranceSeconds) * 1000;
    const revocations = new RevocationFeed(
      () => Sessions.recentChanges(db, accessTokenLifetimeMs),
      logger,
      redis && feedChannel(redis, config.redisKeyPrefix),
      {
        restoresBacklog: true,
        // Without Redis there is one instance, and it applies every change as it makes it.
        poll: redis && ((windowMs) => Sessions.recentChanges(db, accessTokenLifetimeMs, windowMs)),
        clockToleranceSeconds: config.jwt.clockToleranceSeconds,
      },
    );
    await revocations.start();
    closers.push(() => revocations.stop());
    const refreshTokens = new RefreshTokens(deriveKey(keyEncryptionKey!, "refresh-tokens"));
    const sessions = new Sessions(config.session, revocations, accessTokenLifetimeMs, refreshTokens);
    const guard = new SessionGuard(revocations, db, config.session.idleTimeoutSeconds, logger);
    guard.start();
    closers.push(() => guard.stop());
    const cleanup = new Cleanup(
      db,
      {
        intervalSeconds: config.cleanupIntervalSeconds,
        revokedRetentionSeconds: accessTokenLifetimeMs / 1000,
        otpFailureWindowSeconds: config.otp.failureWindowSeconds,
      },
      logger,
    );
    cleanup.start();
    closers.push(() => cleanup.stop());

    const limiter = redis ? new LeasingRateLimiter(new RedisRateLimiter(redis, config.redisKeyPrefix)) : new MemoryRateLimiter();
    const chain = new Chain({
      policies,
      limiter,
      tokens,
      sessions: guard,
      clientIp: new ClientIpResolver(config.trustedProxies),
      limitKeySecret: deriveKey(keyEncryptionKey!, "rate-limit-keys"),
      onLimited: auditLimitHits(db, logger),
      logger,
    });

    const refreshUserRule = config.rateLimits.refresh_user!;
    const refresh = new RefreshRotation(
      db,
      tokens,
      sessions,
      refreshTokens,
      {
        reuseIntervalSeconds: config.session.refreshReuseIntervalSeconds,
        idleTimeoutSeconds: config.session.idleTimeoutSeconds,
      },
      async (userId) => {
        const decision = await consumeRule(limiter, "refresh_user", refreshUserRule, userId, logger);
        if (!decision.allowed) throw rateLimited("refresh_user", decision.retryAfterMs);
      },
    );
    const otp = new OtpSignIn(
      db,
      config.otp,
      createSmsProvider(config.sms, logger),
      limiter,
      deriveKey(keyEncryptionKey!, "otp-codes"),
      sessions,
      tokens,
      logger,
    );
    const passwords = new PasswordSignIn(db, config.password, sessions, tokens);
    const kyc = new Kyc(
      db,
      new Envelope(keyEncryptionKey!, "kyc-data"),
      deriveKey(keyEncryptionKey!, "kyc-document-index"),
      revocations,
      accessTokenLifetimeMs,
    );

    const handlers = collectHandlers([
      [AuthService, authHandlers({ db, keyRing, otp, passwords, refresh, sessions })],
      [SessionService, sessionHandlers(db, sessions)],
      [KycService, kycHandlers(kyc)],
    ]);
    return {
      db,
      redis,
      keyRing,
      tokens,
      revocations,
      sessionGuard: guard,
      cleanup,
      chain,
      dispatch: (incoming, request) => chain.run(incoming, request, handlers.get(incoming.method)!),
      async ready() {
        try {
          await Promise.all([db.ping(), redis && pingRedis(redis)]);
          return true;
        } catch {
          return false;
        }
      },
      async close() {
        for (const close of closers.reverse()) await close();
      },
    };
  } catch (error) {
    for (const close of closers.reverse()) await Promise.resolve(close()).catch(() => {});
    throw error;
  }
}

/** Where session changes travel; downstream guards subscribe to the same. */
export function feedChannel(client: RedisClient, prefix: string): FeedChannel {
  return { client, channel: `${prefix}session-changes`, backlog: `${prefix}session-changes:backlog` };
}

/** Handlers by method descriptor; every method of every service must have one. */
function collectHandlers(implementations: [DescService, Record<string, UnaryHandler<any, any>>][]): Map<DescMethod, UnaryHandler> {
  const handlers = new Map<DescMethod, UnaryHandler>();
  for (const [service, byLocalName] of implementations) {
    for (const method of service.methods) {
      const handler = byLocalName[method.localName];
      if (!handler) throw new Error(`${service.typeName}.${method.name} has no handler`);
      handlers.set(method, handler);
    }
  }
  return handlers;
}
