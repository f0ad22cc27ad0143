import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Accounts } from "../admin/accounts.js";
import { AuditLog } from "../admin/audit-log.js";
import { adminHandlers } from "../admin/handlers.js";
import { ClientAuthentication } from "../clients/client-authentication.js";
import { ClientSecrets } from "../clients/client-secrets.js";
import { tokenHandlers } from "../clients/handlers.js";
import { Introspection } from "../clients/introspection.js";
import { ServiceAccounts } from "../clients/service-accounts.js";
import { ServiceTokens } from "../clients/service-tokens.js";
import { serviceAccountStore } from "../clients/store.js";
import { TokenExchange } from "../clients/token-exchange.js";
import { auditCaptchaRefusals, auditLimitHits } from "../audit/limit-hits.js";
import { normalizeEmail } from "../auth/email.js";
import { ChangeProofs } from "../auth/change-proof.js";
import { ContactChanges } from "../auth/contact-change.js";
import { codeFailureStore } from "../auth/code-failure-store.js";
import { contactVerificationStore } from "../auth/contact-verification-store.js";
import { EmailVerifications } from "../auth/email-verification.js";
import { authHandlers } from "../auth/handlers.js";
import { mfaHandlers } from "../auth/mfa-handlers.js";
import { MfaSignIn } from "../auth/mfa-sign-in.js";
import { mfaChallengeStore } from "../auth/mfa-challenge-store.js";
import { mfaStore, totpSql } from "../auth/mfa-store.js";
import { OtpSignIn } from "../auth/otp.js";
import { NewDeviceNotices } from "../auth/new-device.js";
import { PasswordResets } from "../auth/password-reset.js";
import { PasswordSignIn } from "../auth/password-sign-in.js";
import { phoneLimitKey } from "../auth/phone.js";
import { Profiles } from "../auth/profile.js";
import { MfaNotices } from "../auth/mfa-notices.js";
import { RecoveryCodeHashes } from "../auth/recovery-codes.js";
import { Registration } from "../auth/registration.js";
import { SecondFactors } from "../auth/second-factors.js";
import { SecurityEvents } from "../auth/security-events.js";
import { StepUps } from "../auth/step-up.js";
import { createMailer } from "../auth/mail.js";
import { createSmsProvider } from "../auth/sms.js";
import { SmsBudgets } from "../auth/sms-budgets.js";
import { SecretMacs } from "../auth/one-time-secrets.js";
import { recentTotpEnrolments, TotpEnrollment } from "../auth/totp-enrollment.js";
import { otpStore, passwordResetStore } from "../auth/store.js";
import type { UnaryHandler } from "../kernel/call.js";
import { kycHandlers } from "../kyc/handlers.js";
import { Kyc } from "../kyc/kyc.js";
import { migrations } from "../migrations/index.js";
import { Background } from "../platform/background.js";
import { Cleanup } from "../platform/cleanup.js";
import { accessTokenLifetimeMs, sessionFeedKeys, type Config } from "../platform/config.js";
import { Database } from "../platform/database.js";
import { embeddedKeyEncryptionKey, startEmbeddedPostgres } from "../platform/embedded.js";
import { deriveKey, Envelope } from "../platform/envelope.js";
import type { Dispatch } from "../platform/incoming-call.js";
import type { Logger } from "../platform/logger.js";
import { connectRedis, pingRedis, type RedisClient } from "../platform/redis.js";
import { readPolicies } from "../policy/access.js";
import { Chain } from "../policy/chain.js";
import { ClientIpResolver } from "../policy/client-ip.js";
import { LeasingRateLimiter, MemoryRateLimiter, RedisRateLimiter, ruleGate } from "../policy/rate-limiter.js";
import { captchaGateFor, type CaptchaGate } from "../policy/captcha-gate.js";
import { MemoryFailureCounter, RedisFailureCounter } from "../policy/failure-counter.js";
import { recentChanges, RevocationFeed } from "../session/feed.js";
import { sessionHandlers } from "../session/handlers.js";
import { RefreshRotation } from "../session/refresh.js";
import { SessionGuard } from "../session/session-guard.js";
import { SignInAnswers } from "../session/sign-in-answers.js";
import { Sessions } from "../session/sessions.js";
import { sessionStore } from "../session/store.js";
import { AccessTokens } from "../tokens/access-token.js";
import { KeyRing } from "../tokens/key-ring.js";
import { RefreshTokens } from "../tokens/refresh-token.js";
import { userStore } from "../users/store.js";
import { AdminService } from "../../gen/portcullis/v1/admin_service_pb.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";
import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";
import { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";
import { PasskeyService } from "../../gen/portcullis/v1/passkey_service_pb.js";
import { Ceremonies } from "../passkeys/ceremonies.js";
import { passkeyHandlers } from "../passkeys/handlers.js";
import { Passkeys } from "../passkeys/passkeys.js";
import { PasskeyRegistration } from "../passkeys/registration.js";
import { PasskeySignIn } from "../passkeys/sign-in.js";
import { ceremonyStore } from "../passkeys/store.js";

export const services: readonly DescService[] = [AuthService, SessionService, KycService, AdminService, TokenService, MfaService, PasskeyService];

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
  /** Resolves once the work sign-ins left running after their answer (new-device notices) has finished. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

/** The composition root: builds every part from the configuration and wires them together; decides nothing itself. */
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
      if (config.otp.allowedCountries.length === 0) {
        logger.warn("OTP_ALLOWED_COUNTRIES is not set: codes go to every country; a shared deployment must list them (or say * for every country)");
      }
      const embedded = await startEmbeddedPostgres(config.dataDir);
      closers.push(() => embedded.stop());
      database = embedded;
      keyEncryptionKey ??= embeddedKeyEncryptionKey(config.dataDir, logger);
    } else {
      redis = await connectRedis(config.redisUrl!, config.redisCluster, config.redisCommandTimeoutMs);
      closers.push(() => void redis!.disconnect());
    }
    const kek = keyEncryptionKey!;
    const db = await Database.open(database.url, logger, database.options, migrations);
    closers.push(() => db.close());

    const keyRing = new KeyRing(
      db,
      new Envelope(kek, "signing-keys"),
      config.jwt.algorithm,
      {
        rotationIntervalSeconds: config.keys.rotationIntervalSeconds,
        publishLeadSeconds: config.keys.publishLeadSeconds,
        verifyGraceSeconds: accessTokenLifetimeMs(config.jwt) / 1000,
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
    const tokenLifetimeMs = accessTokenLifetimeMs(config.jwt);
    // The session domain's changes, and the auth domain's TOTP enrolments, which the session floor cannot read: read at once.
    const changesWithin = async (windowMs?: number) =>
      (await Promise.all([recentChanges(db, tokenLifetimeMs, windowMs), recentTotpEnrolments(db, tokenLifetimeMs, windowMs)])).flat();
    const revocations = new RevocationFeed(
      () => changesWithin(),
      logger,
      redis && { client: redis, ...sessionFeedKeys(config.redisKeyPrefix) },
      {
        restoresBacklog: true,
        // Without Redis there is one instance, and it applies every change as it makes it.
        poll: redis && changesWithin,
        clockToleranceSeconds: config.jwt.clockToleranceSeconds,
        // For guards, which have no Postgres to poll: their feed's silence is their only sign that it stopped reaching them.
        heartbeatIntervalMs: redis && config.feedHeartbeatSeconds * 1000,
      },
    );
    await revocations.start();
    closers.push(() => revocations.stop());
    const refreshTokens = new RefreshTokens(deriveKey(kek, "refresh-tokens"));
    const sessions = new Sessions(db, config.session, revocations, tokenLifetimeMs, refreshTokens);
    const guard = new SessionGuard(revocations, db, config.session.idleTimeoutSeconds, logger);
    guard.start();
    closers.push(() => guard.stop());
    const cleanup = new Cleanup(
      {
        // Revoked sessions are kept as long as a token may outlive them: new instances catch up on revocations from them.
        sessions: () => sessionStore.purgeEnded(db, tokenLifetimeMs / 1000),
        refreshTokens: () => sessionStore.purgeExpiredRefreshTokens(db),
        otpChallenges: () => otpStore.purgeClosedCodes(db),
        otpFailures: () => otpStore.purgeOldFailures(db, config.otp.failureWindowSeconds),
        passwordFailureSources: () => userStore.purgeQuietFailureSources(db),
        contactVerifications: () => contactVerificationStore.purgeClosed(db),
        passwordResets: () => passwordResetStore.purgeClosed(db),
        codeFailures: () => codeFailureStore.purgeOld(db),
        mfaFailures: () => mfaStore.purgeOldFailures(db, config.mfa.failureWindowSeconds),
        mfaLockouts: () => mfaStore.purgeOldLockouts(db),
        mfaChallenges: () => mfaChallengeStore.purgeEnded(db),
        passkeyCeremonies: () => ceremonyStore.purgeExpired(db),
        clientAssertions: () => serviceAccountStore.purgeUsedAssertions(db),
      },
      config.cleanupIntervalSeconds,
      logger,
    );
    cleanup.start();
    closers.push(() => cleanup.stop());

    const background = new Background(logger);
    closers.push(() => background.settled());
    const limiter = redis ? new LeasingRateLimiter(new RedisRateLimiter(redis, config.redisKeyPrefix)) : new MemoryRateLimiter();
    const chain = new Chain({
      policies,
      limiter,
      tokens,
      sessions: guard,
      clientIp: new ClientIpResolver(config.trustedProxies, config.ipv6LimitPrefixes),
      limitKeyForms: { phone: phoneLimitKey, email: normalizeEmail },
      limitKeySecret: deriveKey(kek, "rate-limit-keys"),
      onLimited: auditLimitHits(db, background),
      captcha: captchaGate(config, redis, logger),
      onCaptchaRefused: auditCaptchaRefusals(db, background),
      logger,
    });

    const refresh = new RefreshRotation(
      db,
      tokens,
      sessions,
      refreshTokens,
      { reuseIntervalSeconds: config.session.refreshReuseIntervalSeconds, idleTimeoutSeconds: config.session.idleTimeoutSeconds },
      ruleGate(limiter, "refresh_user", config.rateLimits.refresh_user!, logger),
      totpSql.enrolled,
    );
    const mailer = createMailer(config.email, logger);
    const sms = createSmsProvider(config.sms, logger);
    const newDevices = new NewDeviceNotices(db, mailer, config.account, background);
    const recoveryCodeHashes = new RecoveryCodeHashes(deriveKey(kek, "recovery-codes"));
    const mfaNotices = new MfaNotices(db, mailer, config.account, background);
    const secondFactors = new SecondFactors(db, config.mfa, new Envelope(kek, "totp-secrets"), recoveryCodeHashes, mfaNotices);
    const signInAnswers = new SignInAnswers(sessions, tokens, newDevices);
    const mfaSignIn = new MfaSignIn(db, config.mfa, deriveKey(kek, "mfa-challenges"), secondFactors, sessions, signInAnswers);
    const smsBudgets = new SmsBudgets(db, config.otp, limiter, logger);
    const otp = new OtpSignIn(db, config.otp, sms, smsBudgets, deriveKey(kek, "otp-codes"), sessions, signInAnswers, logger, mfaSignIn);
    const accountCodes = new SecretMacs(deriveKey(kek, "account-codes"));
    const emailVerifications = new EmailVerifications(db, config.account, accountCodes, mailer, logger);
    const passwords = new PasswordSignIn(db, config.password, sessions, signInAnswers, config.ipv6LimitPrefixes.client, config.account.emailVerification, emailVerifications, mfaSignIn);
    const registration = new Registration(db, config.account, emailVerifications, mailer);
    const changeProofs = new ChangeProofs(db, config.account, passwords, sessions);
    const contactChanges = new ContactChanges(db, config.account, config.otp.allowedCountries, changeProofs, emailVerifications, mailer, sms, smsBudgets, accountCodes);
    const passwordResets = new PasswordResets(db, config.account, sessions, mailer, new SecretMacs(deriveKey(kek, "password-reset")), background);
    const kyc = new Kyc(db, new Envelope(kek, "kyc-data"), deriveKey(kek, "kyc-document-index"), revocations, tokenLifetimeMs);
    const clientSecrets = new ClientSecrets(deriveKey(kek, "client-secrets"));
    const totp = new TotpEnrollment(db, secondFactors, {
      recoveryHashes: recoveryCodeHashes,
      issuer: config.account.productName,
      proofs: changeProofs,
      notices: mfaNotices,
      publish: (event) => revocations.publish(event),
      accessTokenLifetimeMs: tokenLifetimeMs,
    });
    if (config.webauthn.unavailable) logger.warn(`passkeys are off: ${config.webauthn.unavailable}; set APP_URL, or WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS`);
    const passkeyCeremonies = new Ceremonies(deriveKey(kek, "passkey-ceremonies"), config.webauthn.challengeTtlSeconds);
    const clientAuthentication = new ClientAuthentication(db, clientSecrets, {
      audiences: [`${config.publicUrl}/oauth2/token`, config.jwt.issuer],
      clockToleranceSeconds: config.jwt.clockToleranceSeconds,
    });

    const handlers = collectHandlers([
      [AuthService, authHandlers({
        contactChanges,
        emailVerifications,
        keyRing,
        otp,
        passwords,
        passwordResets,
        profiles: new Profiles(db),
        refresh,
        registration,
        securityEvents: new SecurityEvents(db),
        sessions,
      })],
      [SessionService, sessionHandlers(sessions)],
      [KycService, kycHandlers(kyc)],
      [MfaService, mfaHandlers({ totp, stepUps: new StepUps(db, secondFactors, tokens), mfaSignIn })],
      [PasskeyService, passkeyHandlers({
        registration: new PasskeyRegistration(db, config.webauthn, passkeyCeremonies, {
          prove: (...args) => changeProofs.prove(...args),
          passkeyAdded: (userId) => mfaNotices.passkeyAdded(userId),
        }),
        signIn: new PasskeySignIn(db, config.webauthn, passkeyCeremonies, sessions, signInAnswers, totpSql.enrolled),
        passkeys: new Passkeys(db, mfaNotices),
      })],
      [TokenService, tokenHandlers({
        serviceTokens: new ServiceTokens(
          clientAuthentication,
          tokens,
          config.serviceTokenTtlSeconds,
          ruleGate(limiter, "service_token_client", config.rateLimits.service_token_client!, logger),
        ),
        exchange: new TokenExchange(db, tokens, guard, { ownAudience: config.jwt.audience, ttlSeconds: config.serviceTokenTtlSeconds }),
        introspection: new Introspection(db, tokens, revocations, config.jwt.audience),
      })],
      [AdminService, adminHandlers(new Accounts(db, sessions, revocations, tokenLifetimeMs), new AuditLog(db), new ServiceAccounts(db, clientSecrets, [config.jwt.issuer, config.jwt.audience]))],
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
      settled: () => background.settled(),
      close: () => closeAll(closers),
    };
  } catch (error) {
    await closeAll(closers).catch(() => {});
    throw error;
  }
}

/** The captcha check CAPTCHA_PROVIDER asks for, counting failures where the rate limits count; none for "none". */
function captchaGate(config: Config, redis: RedisClient | undefined, logger: Logger): CaptchaGate | undefined {
  const failures = redis ? new RedisFailureCounter(redis, config.redisKeyPrefix) : new MemoryFailureCounter();
  return captchaGateFor(config.captcha, failures, logger);
}

/**
 * Last opened, first closed; every closer runs even when one before it fails,
 * so one stuck part cannot leave the others open. Throws the first failure.
 */
export async function closeAll(closers: readonly (() => Promise<void> | void)[]): Promise<void> {
  let failure: { error: unknown } | undefined;
  for (const close of [...closers].reverse()) {
    try {
      await close();
    } catch (error) {
      failure ??= { error };
    }
  }
  if (failure) throw failure.error;
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
