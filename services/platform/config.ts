import { readFileSync } from "node:fs";
import { IpRangeError, IpRanges } from "./ip-ranges.js";

/**
 * Every setting Portcullis reads, with its default, in one place. `loadConfig`
 * is the only reader of process.env; a bad value stops start-up with a message
 * that names the variable.
 */

export type Mode = "all" | "grpc" | "gateway";
export type SigningAlgorithm = "ES256" | "RS256" | "EdDSA";

export interface RateLimitRule {
  /** Requests allowed per period (also the burst). */
  limit: number;
  periodSeconds: number;
  /**
   * Whether the call goes through when the limit store cannot be reached.
   * Only limits that protect capacity (not credentials) fail open.
   */
  failOpen: boolean;
}

export type SmsProviderName = "console" | "webhook" | "twilio";

export interface SmsConfig {
  provider: SmsProviderName;
  timeoutMs: number;
  webhook?: { url: string; secret?: string };
  twilio?: { accountSid: string; authToken: string; from?: string; messagingServiceSid?: string; baseUrl: string };
}

export type EmailProviderName = "console" | "webhook" | "smtp";

export interface EmailConfig {
  provider: EmailProviderName;
  /** The From header, e.g. "Portcullis <no-reply@example.com>". */
  from: string;
  timeoutMs: number;
  webhook?: { url: string; secret?: string };
  /** smtp:// (STARTTLS when the server offers it) or smtps:// (TLS from the start), with credentials if any. */
  smtpUrl?: string;
  /** PEM certificates (SMTP_CA_FILE) trusted for the SMTP server instead of the system's, for a private CA. */
  smtpCa?: string;
}

export type CaptchaProviderName = "none" | "turnstile" | "hcaptcha" | "recaptcha";

export interface CaptchaConfig {
  provider: CaptchaProviderName;
  /** Unset only with provider none. */
  secret?: string;
  /** Sent to clients in CAPTCHA_REQUIRED so they can render the widget; unset only with provider none. */
  siteKey?: string;
  /** The provider's siteverify URL; CAPTCHA_VERIFY_URL points it at a stand-in. Unset only with provider none. */
  verifyUrl?: string;
  /** reCAPTCHA v3: the lowest score that passes. */
  minScore: number;
  /** reCAPTCHA v3: when set, the token's action must be this. */
  expectedAction?: string;
  /** IPs and CIDRs whose calls need no token (internal load tests, monitoring). */
  allowIps: string[];
  /** A token always accepted without asking the provider: for end-to-end tests (at least 32 characters; with DATABASE_URL only beside CAPTCHA_ALLOW_TEST_TOKEN=true). */
  testToken?: string;
  /** AFTER_FAILURES methods ask for a token after this many failed calls in failureWindowSeconds, by IP or by identifier. */
  failureThreshold: number;
  failureWindowSeconds: number;
  /** Whether AFTER_FAILURES methods let calls through while the provider cannot be reached (ALWAYS methods never do). */
  failOpenAfterFailures: boolean;
  timeoutMs: number;
}

/** Each provider's siteverify endpoint. */
export const captchaVerifyUrls: Record<Exclude<CaptchaProviderName, "none">, string> = {
  turnstile: "https://challenges.cloudflare.com/turnstile/v0/siteverify",
  hcaptcha: "https://api.hcaptcha.com/siteverify",
  recaptcha: "https://www.google.com/recaptcha/api/siteverify",
};

export interface Config {
  mode: Mode;
  host: string;
  grpcPort: number;
  httpPort: number;
  /** Where Prometheus scrapes /metrics; 0 serves none. */
  metricsPort: number;
  /** Where a gateway-only process forwards calls (MODE=gateway). */
  gatewayUpstream: string;
  /** How long a forwarded call may wait for the upstream, sent on as its gRPC deadline. */
  gatewayUpstreamTimeoutMs: number;
  /** Undefined for the embedded default. */
  databaseUrl?: string;
  /** Connections each instance keeps to DATABASE_URL. */
  databasePoolSize: number;
  /** One URL, or with redisCluster the comma-separated seed nodes. */
  redisUrl?: string;
  redisCluster: boolean;
  redisKeyPrefix: string;
  /** How long a Redis command may take before it fails, so a stalled Redis fails open or closed instead of stalling calls. */
  redisCommandTimeoutMs: number;
  /** How often each instance says on the session-change channel that it is there; guards fail closed after a few missed. */
  feedHeartbeatSeconds: number;
  dataDir: string;
  /** 32 bytes; undefined only in embedded mode, which keeps one in dataDir. */
  keyEncryptionKey?: Buffer;
  jwt: {
    issuer: string;
    audience: string;
    algorithm: SigningAlgorithm;
    accessTokenTtlSeconds: number;
    clockToleranceSeconds: number;
    verifiedCacheSize: number;
  };
  /**
   * Where clients reach the gateway: the base of the OAuth endpoints in the
   * authorization-server metadata, and the token endpoint client assertions name as `aud`.
   */
  publicUrl: string;
  /** Service tokens (IssueServiceToken) and tokens exchanged for another audience live at most this long. */
  serviceTokenTtlSeconds: number;
  keys: {
    rotationIntervalSeconds: number;
    /** How long a new key is published before it signs: covers JWKS caches. */
    publishLeadSeconds: number;
  };
  trustedProxies: string[];
  /** IPv6 clients are rate-limited by prefix: each rule per `client` prefix, and 16 times it per `wide` prefix. */
  ipv6LimitPrefixes: { client: number; wide: number };
  corsOrigins: string[];
  rateLimits: Record<string, RateLimitRule>;
  otp: {
    /** ISO 3166 alpha-2 codes; empty means every country (OTP_ALLOWED_COUNTRIES=*, or unset on the embedded default). */
    allowedCountries: string[];
    ttlSeconds: number;
    maxAttempts: number;
    resendCooldownSeconds: number;
    /** Wrong codes per phone number in failureWindowSeconds before the number is locked. */
    failureBudget: number;
    failureWindowSeconds: number;
    /** SMS per country per hour, against SMS pumping: each country counted on its own, all against this one budget. */
    countryHourlyBudget: number;
    /** SMS per hour per number prefix: the country calling code and the first `prefixDigits` national digits. */
    prefixHourlyBudget: number;
    prefixDigits: number;
  };
  password: {
    /** Consecutive wrong passwords from one source (an IP, an IPv6 client's prefix) that lock the account for that source. */
    lockoutThreshold: number;
    /** Consecutive wrong passwords from all sources together that lock the account everywhere. */
    accountLockoutThreshold: number;
    /** The first lock; each later one doubles, up to lockoutMaxSeconds. */
    lockoutBaseSeconds: number;
    lockoutMaxSeconds: number;
  };
  session: {
    /** Absolute lifetime: the session and its refresh tokens end then, whatever happens. */
    lifetimeSeconds: number;
    idleTimeoutSeconds: number;
    maxPerUser: number;
    /** A used refresh token presented again within this window gets the same successor. */
    refreshReuseIntervalSeconds: number;
  };
  sms: SmsConfig;
  email: EmailConfig;
  account: {
    /** required: Login refuses an address not yet verified; optional: it signs in and the token says email_verified false. */
    emailVerification: "required" | "optional";
    /** Named in every mail. */
    productName: string;
    /** Where mailed links point: the app that reads the token after "#token=" and calls VerifyEmail or ResetPassword. */
    appUrl: string;
    /** How long a mailed or texted verification code (and link) works. */
    verificationTtlSeconds: number;
    passwordResetTtlSeconds: number;
    /** Wrong tries a verification or reset code allows before it is closed. */
    codeMaxAttempts: number;
    /**
     * Wrong verification and reset codes a user may type in 24 hours, across codes; past it codes are refused (links,
     * being unguessable, still work) until the oldest leaves the window.
     */
    codeFailureBudget: number;
    /** Login resends a verification mail at most this often. */
    verificationResendSeconds: number;
    /** For ChangeEmail and ChangePhoneNumber on an account without a password: how recent the sign-in must be. */
    freshSignInSeconds: number;
  };
  mfa: {
    /** Wrong second factors (TOTP or recovery codes) a user may give in failureWindowSeconds; past it every code is refused. */
    failureBudget: number;
    failureWindowSeconds: number;
    /** How long a sign-in waits for its second factor (VerifyMfa) after the first. */
    challengeTtlSeconds: number;
    /** Second factors one sign-in's challenge takes before it is dead. */
    challengeMaxAttempts: number;
  };
  captcha: CaptchaConfig;
  /** Passkeys: the relying party browsers bind them to, and the pages allowed to run ceremonies. */
  webauthn: {
    /** A domain (no scheme or port): APP_URL's host by default. */
    rpId: string;
    rpName: string;
    /** Origins (scheme, host, port) whose pages may register and use passkeys: APP_URL's by default. */
    origins: string[];
    challengeTtlSeconds: number;
    /** Why passkeys are off: APP_URL, which the defaults come from, is no relying party browsers accept. */
    unavailable?: string;
  };
  /** Whether the gateway serves the sign-in web app at / (on for the embedded default, off with DATABASE_URL). */
  webApp: boolean;
  cleanupIntervalSeconds: number;
  maxRequestBytes: number;
  gateway: {
    /** How long a client may take to send a request's headers, and the whole request. */
    headersTimeoutMs: number;
    requestTimeoutMs: number;
  };
  logLevel: string;
  shutdownGraceSeconds: number;
  tracing: {
    /** Where spans go (OTLP over HTTP, the traces URL); undefined: tracing is off. */
    endpoint?: string;
    serviceName: string;
  };
}

const minute = 60;
const hour = 60 * minute;
const day = 24 * hour;

/** The design's default limits; RATE_LIMITS overrides any of them. */
export const defaultRateLimits: Record<string, RateLimitRule> = {
  otp_send_phone: { limit: 3, periodSeconds: hour, failOpen: false },
  otp_send_ip: { limit: 10, periodSeconds: hour, failOpen: false },
  otp_send_global: { limit: 60, periodSeconds: minute, failOpen: false },
  otp_verify_ip: { limit: 20, periodSeconds: hour, failOpen: false },
  register_ip: { limit: 10, periodSeconds: hour, failOpen: false },
  register_email: { limit: 3, periodSeconds: hour, failOpen: false },
  register_global: { limit: 300, periodSeconds: minute, failOpen: false },
  verify_email_ip: { limit: 30, periodSeconds: hour, failOpen: false },
  verify_email_email: { limit: 10, periodSeconds: hour, failOpen: false },
  verify_email_global: { limit: 600, periodSeconds: minute, failOpen: false },
  change_email_user: { limit: 5, periodSeconds: hour, failOpen: false },
  change_phone_user: { limit: 5, periodSeconds: hour, failOpen: false },
  verify_phone_user: { limit: 10, periodSeconds: hour, failOpen: false },
  password_reset_email: { limit: 3, periodSeconds: hour, failOpen: false },
  password_reset_ip: { limit: 10, periodSeconds: hour, failOpen: false },
  password_reset_global: { limit: 60, periodSeconds: minute, failOpen: false },
  reset_password_ip: { limit: 20, periodSeconds: hour, failOpen: false },
  reset_password_email: { limit: 10, periodSeconds: hour, failOpen: false },
  reset_password_global: { limit: 300, periodSeconds: minute, failOpen: false },
  login_email: { limit: 5, periodSeconds: 15 * minute, failOpen: false },
  login_ip: { limit: 10, periodSeconds: 15 * minute, failOpen: false },
  refresh_user: { limit: 10, periodSeconds: minute, failOpen: false },
  refresh_ip: { limit: 30, periodSeconds: minute, failOpen: false },
  change_password_user: { limit: 5, periodSeconds: 15 * minute, failOpen: false },
  kyc_submit_user: { limit: 10, periodSeconds: day, failOpen: false },
  service_token_client: { limit: 60, periodSeconds: minute, failOpen: false },
  service_token_ip: { limit: 120, periodSeconds: minute, failOpen: false },
  service_call: { limit: 6000, periodSeconds: minute, failOpen: true },
  mfa_user: { limit: 20, periodSeconds: 15 * minute, failOpen: false },
  mfa_verify_ip: { limit: 30, periodSeconds: 15 * minute, failOpen: false },
  passkey_user: { limit: 30, periodSeconds: 15 * minute, failOpen: false },
  passkey_sign_in_ip: { limit: 60, periodSeconds: 15 * minute, failOpen: false },
  passkey_sign_in_global: { limit: 600, periodSeconds: minute, failOpen: false },
  api_user: { limit: 1000, periodSeconds: minute, failOpen: true },
  api_ip: { limit: 3000, periodSeconds: minute, failOpen: true },
};

/** Defaults that services behind the guard share with Portcullis: both read them here. */
export const sharedDefaults = {
  issuer: "portcullis",
  audience: "portcullis",
  redisKeyPrefix: "portcullis:",
  redisCommandTimeoutMs: 1000,
  feedHeartbeatSeconds: 5,
  clockToleranceSeconds: 5,
  verifiedCacheSize: 10_000,
  /** The longest ACCESS_TOKEN_TTL_SECONDS may be; the guard refuses tokens that live longer unless told Portcullis's own. */
  maxAccessTokenTtlSeconds: day,
  ipv6LimitPrefixes: { client: 64, wide: 48 },
} as const;

/** How long an access token can outlive the revocation of its session: its lifetime plus the clock tolerance. */
export function accessTokenLifetimeMs(jwt: Pick<Config["jwt"], "accessTokenTtlSeconds" | "clockToleranceSeconds">): number {
  return (jwt.accessTokenTtlSeconds + jwt.clockToleranceSeconds) * 1000;
}

/** Where session changes travel under a Redis key prefix: Portcullis publishes there, guards subscribe. */
export function sessionFeedKeys(redisKeyPrefix: string): { channel: string; backlog: string } {
  return { channel: `${redisKeyPrefix}session-changes`, backlog: `${redisKeyPrefix}session-changes:backlog` };
}

export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

/**
 * `sendsCodes: false` is for tools that never send a code nor serve a call (the admin CLI):
 * they run with a shared deployment's database but need none of its SMS, email or captcha settings.
 */
export function loadConfig(env: Env = process.env, { sendsCodes = true }: { sendsCodes?: boolean } = {}): Config {
  const read = (name: string) => {
    const value = env[name]?.trim();
    return value === "" ? undefined : value;
  };
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new ConfigError(name, `expected a whole number from ${min} to ${max}, got "${raw}"`);
    }
    return value;
  };
  const oneOf = <T extends string>(name: string, allowed: readonly T[], fallback: T): T => {
    const raw = read(name) ?? fallback;
    if (!(allowed as readonly string[]).includes(raw)) {
      throw new ConfigError(name, `expected one of ${allowed.join(", ")}, got "${raw}"`);
    }
    return raw as T;
  };
  const list = (name: string) =>
    (read(name) ?? "").split(",").map((item) => item.trim()).filter(Boolean);

  const databaseUrl = read("DATABASE_URL");
  const redisUrl = read("REDIS_URL");
  if (Boolean(databaseUrl) !== Boolean(redisUrl)) {
    const missing = databaseUrl ? "REDIS_URL" : "DATABASE_URL";
    throw new ConfigError(
      missing,
      "set both DATABASE_URL and REDIS_URL for a shared deployment, or neither for the embedded single-instance default",
    );
  }
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError("DATABASE_URL", "expected a postgres:// URL");
  }
  const redisCluster = oneOf("REDIS_CLUSTER", ["true", "false"], "false") === "true";
  for (const url of redisUrl?.split(",") ?? []) {
    if (!/^rediss?:\/\//.test(url.trim())) throw new ConfigError("REDIS_URL", `expected redis:// or rediss:// URLs, got "${url.trim()}"`);
  }
  if (redisUrl?.includes(",") && !redisCluster) {
    throw new ConfigError("REDIS_URL", "several URLs are seed nodes of a cluster: set REDIS_CLUSTER=true");
  }

  const keyEncryptionKey = parseKek(read("KEY_ENCRYPTION_KEY"));
  if (databaseUrl && !keyEncryptionKey) {
    throw new ConfigError(
      "KEY_ENCRYPTION_KEY",
      "required with DATABASE_URL: 32 random bytes in base64 (for example: openssl rand -base64 32)",
    );
  }

  const trustedProxies = ipRanges("TRUSTED_PROXIES", list("TRUSTED_PROXIES"));
  const corsOrigins = list("CORS_ORIGINS");
  for (const origin of corsOrigins) {
    if (!/^https?:\/\/[^/]+$/.test(origin)) {
      throw new ConfigError("CORS_ORIGINS", `"${origin}" is not an origin like https://app.example.com`);
    }
  }

  const productName = read("PRODUCT_NAME") ?? "Portcullis";
  const appUrl = httpUrl("APP_URL", read("APP_URL") ?? "http://localhost:8080");
  const accessTokenTtlSeconds = int("ACCESS_TOKEN_TTL_SECONDS", 15 * minute, 60, sharedDefaults.maxAccessTokenTtlSeconds);
  return {
    mode: oneOf("MODE", ["all", "grpc", "gateway"], "all"),
    host: read("HOST") ?? "127.0.0.1",
    grpcPort: int("GRPC_PORT", 50051, 0, 65535),
    httpPort: int("HTTP_PORT", 8080, 0, 65535),
    metricsPort: int("METRICS_PORT", 9464, 0, 65535),
    gatewayUpstream: read("GATEWAY_UPSTREAM") ?? "http://127.0.0.1:50051",
    gatewayUpstreamTimeoutMs: int("GATEWAY_UPSTREAM_TIMEOUT_MS", 10_000, 50, 10 * minute * 1000),
    databaseUrl,
    databasePoolSize: int("DATABASE_POOL_SIZE", 10, 1, 1000),
    redisUrl,
    redisCluster,
    redisKeyPrefix: read("REDIS_KEY_PREFIX") ?? sharedDefaults.redisKeyPrefix,
    redisCommandTimeoutMs: int("REDIS_COMMAND_TIMEOUT_MS", sharedDefaults.redisCommandTimeoutMs, 50, 60_000),
    feedHeartbeatSeconds: int("FEED_HEARTBEAT_SECONDS", sharedDefaults.feedHeartbeatSeconds, 1, 60),
    dataDir: read("DATA_DIR") ?? ".data",
    keyEncryptionKey,
    jwt: {
      issuer: read("JWT_ISSUER") ?? sharedDefaults.issuer,
      audience: read("JWT_AUDIENCE") ?? sharedDefaults.audience,
      algorithm: oneOf("JWT_ALGORITHM", ["ES256", "RS256", "EdDSA"], "ES256"),
      accessTokenTtlSeconds,
      clockToleranceSeconds: int("JWT_CLOCK_TOLERANCE_SECONDS", sharedDefaults.clockToleranceSeconds, 0, 300),
      verifiedCacheSize: int("TOKEN_CACHE_SIZE", sharedDefaults.verifiedCacheSize, 0, 10_000_000),
    },
    publicUrl: httpUrl("PUBLIC_URL", read("PUBLIC_URL") ?? "http://localhost:8080"),
    serviceTokenTtlSeconds: int("SERVICE_TOKEN_TTL_SECONDS", 5 * minute, 60, accessTokenTtlSeconds),
    keys: {
      rotationIntervalSeconds: int("KEY_ROTATION_INTERVAL_SECONDS", 30 * day, hour, 365 * day),
      publishLeadSeconds: int("KEY_PUBLISH_LEAD_SECONDS", hour, 0, 7 * day),
    },
    trustedProxies,
    ipv6LimitPrefixes: ipv6LimitPrefixes(int),
    corsOrigins,
    rateLimits: parseRateLimits(read("RATE_LIMITS")),
    otp: {
      allowedCountries: allowedCountries(list("OTP_ALLOWED_COUNTRIES"), Boolean(databaseUrl) && sendsCodes),
      ttlSeconds: int("OTP_TTL_SECONDS", 5 * minute, 30, hour),
      maxAttempts: int("OTP_MAX_ATTEMPTS", 3, 1, 10),
      resendCooldownSeconds: int("OTP_RESEND_COOLDOWN_SECONDS", minute, 0, hour),
      failureBudget: int("OTP_FAILURE_BUDGET", 10, 1, 1000),
      failureWindowSeconds: int("OTP_FAILURE_WINDOW_SECONDS", day, minute, 30 * day),
      countryHourlyBudget: int("OTP_COUNTRY_HOURLY_BUDGET", 100, 1, 10_000_000),
      prefixHourlyBudget: int("OTP_PREFIX_HOURLY_BUDGET", 10, 1, 10_000_000),
      prefixDigits: int("OTP_PREFIX_DIGITS", 6, 1, 12),
    },
    password: passwordLockout(int),
    session: {
      lifetimeSeconds: int("SESSION_LIFETIME_SECONDS", 30 * day, hour, 365 * day),
      idleTimeoutSeconds: int("SESSION_IDLE_TIMEOUT_SECONDS", 7 * day, 5 * minute, 365 * day),
      maxPerUser: int("SESSION_LIMIT_PER_USER", 5, 1, 1000),
      refreshReuseIntervalSeconds: int("REFRESH_REUSE_INTERVAL", 10, 0, 300),
    },
    sms: parseSms(read, int, Boolean(databaseUrl) && sendsCodes),
    email: parseEmail(read, int, Boolean(databaseUrl) && sendsCodes),
    account: {
      emailVerification: oneOf("EMAIL_VERIFICATION", ["required", "optional"], "required"),
      productName,
      appUrl,
      verificationTtlSeconds: int("EMAIL_VERIFICATION_TTL_SECONDS", 30 * minute, minute, day),
      passwordResetTtlSeconds: int("PASSWORD_RESET_TTL_SECONDS", 15 * minute, minute, day),
      codeMaxAttempts: int("ACCOUNT_CODE_MAX_ATTEMPTS", 5, 1, 10),
      codeFailureBudget: int("ACCOUNT_CODE_FAILURE_BUDGET", 10, 1, 1000),
      verificationResendSeconds: int("EMAIL_VERIFICATION_RESEND_SECONDS", minute, 0, hour),
      freshSignInSeconds: int("FRESH_SIGN_IN_SECONDS", 10 * minute, minute, day),
    },
    mfa: {
      failureBudget: int("MFA_FAILURE_BUDGET", 10, 1, 1000),
      failureWindowSeconds: int("MFA_FAILURE_WINDOW_SECONDS", 15 * minute, minute, day),
      challengeTtlSeconds: int("MFA_CHALLENGE_TTL_SECONDS", 5 * minute, 30, hour),
      challengeMaxAttempts: int("MFA_CHALLENGE_MAX_ATTEMPTS", 5, 1, 20),
    },
    captcha: parseCaptcha(read, int, list, Boolean(databaseUrl) && sendsCodes),
    webauthn: parseWebauthn(read, int, list, appUrl, productName),
    webApp: oneOf("WEB_APP", ["on", "off"], databaseUrl ? "off" : "on") === "on",
    cleanupIntervalSeconds: int("CLEANUP_INTERVAL_SECONDS", 10 * minute, 10, day),
    maxRequestBytes: int("MAX_REQUEST_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024),
    gateway: gatewayTimeouts(int),
    logLevel: oneOf("LOG_LEVEL", ["trace", "debug", "info", "warn", "error", "fatal", "silent"], "info"),
    shutdownGraceSeconds: int("SHUTDOWN_GRACE_SECONDS", 10, 0, 600),
    tracing: { endpoint: tracesEndpoint(read), serviceName: read("OTEL_SERVICE_NAME") ?? "portcullis" },
  };
}

function gatewayTimeouts(int: (name: string, fallback: number, min: number, max: number) => number): Config["gateway"] {
  const headersTimeoutMs = int("GATEWAY_HEADERS_TIMEOUT_MS", 10_000, 100, 10 * minute * 1000);
  const requestTimeoutMs = int("GATEWAY_REQUEST_TIMEOUT_MS", 30_000, 100, hour * 1000);
  // Node refuses a headers timeout longer than the request timeout.
  if (headersTimeoutMs > requestTimeoutMs) {
    throw new ConfigError("GATEWAY_HEADERS_TIMEOUT_MS", `must not exceed GATEWAY_REQUEST_TIMEOUT_MS (${requestTimeoutMs})`);
  }
  return { headersTimeoutMs, requestTimeoutMs };
}

/**
 * OpenTelemetry's own variables: the signal-specific URL is used as given, the
 * general one is a base the traces path goes under.
 */
function tracesEndpoint(read: (name: string) => string | undefined): string | undefined {
  if (read("OTEL_SDK_DISABLED") === "true") return undefined;
  const specific = read("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const base = read("OTEL_EXPORTER_OTLP_ENDPOINT");
  const name = specific ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" : "OTEL_EXPORTER_OTLP_ENDPOINT";
  const url = specific ?? (base && `${base.replace(/\/$/, "")}/v1/traces`);
  if (url && !/^https?:\/\/[^/]/.test(url)) throw new ConfigError(name, `expected an http(s) URL, got "${specific ?? base}"`);
  return url;
}

/** Every country only when asked for ("*"), or on the embedded default: an open list invites SMS pumping. */
function allowedCountries(codes: string[], shared: boolean): string[] {
  if (codes.length === 1 && codes[0] === "*") return [];
  if (codes.length === 0 && shared) {
    throw new ConfigError(
      "OTP_ALLOWED_COUNTRIES",
      "required with DATABASE_URL: the ISO 3166 alpha-2 codes of the countries codes are sent to (GB,IE), or * for every country",
    );
  }
  for (const code of codes) {
    if (!/^[A-Z]{2}$/.test(code)) throw new ConfigError("OTP_ALLOWED_COUNTRIES", `"${code}" is not an ISO 3166 alpha-2 code like GB, or a lone *`);
  }
  return codes;
}

function passwordLockout(int: (name: string, fallback: number, min: number, max: number) => number): Config["password"] {
  const lockoutThreshold = int("PASSWORD_LOCKOUT_THRESHOLD", 5, 1, 100);
  // Looser than one source's, so a guesser spread over many addresses is stopped too.
  const accountLockoutThreshold = int("PASSWORD_LOCKOUT_ACCOUNT_THRESHOLD", 4 * lockoutThreshold, lockoutThreshold, 10_000);
  const lockoutMaxSeconds = int("PASSWORD_LOCKOUT_MAX_SECONDS", hour, 1, day);
  const lockoutBaseSeconds = int("PASSWORD_LOCKOUT_BASE_SECONDS", Math.min(15 * minute, lockoutMaxSeconds), 1, day);
  if (lockoutBaseSeconds > lockoutMaxSeconds) {
    throw new ConfigError("PASSWORD_LOCKOUT_BASE_SECONDS", `must not exceed PASSWORD_LOCKOUT_MAX_SECONDS (${lockoutMaxSeconds})`);
  }
  return { lockoutThreshold, accountLockoutThreshold, lockoutBaseSeconds, lockoutMaxSeconds };
}

function ipv6LimitPrefixes(int: (name: string, fallback: number, min: number, max: number) => number): Config["ipv6LimitPrefixes"] {
  const defaults = sharedDefaults.ipv6LimitPrefixes;
  const client = int("IPV6_LIMIT_PREFIX", defaults.client, 32, 128);
  return { client, wide: int("IPV6_WIDE_LIMIT_PREFIX", Math.min(defaults.wide, client), 16, client) };
}

function parseKek(raw: string | undefined): Buffer | undefined {
  if (raw === undefined) return undefined;
  const key = Buffer.from(raw, "base64");
  if (key.length !== 32) {
    throw new ConfigError("KEY_ENCRYPTION_KEY", `expected 32 bytes in base64, got ${key.length} bytes`);
  }
  return key;
}

/** RATE_LIMITS="otp_send_phone=5/3600,api_ip=6000/60" overrides the named rules. */
function parseRateLimits(raw: string | undefined): Record<string, RateLimitRule> {
  const rules = structuredClone(defaultRateLimits);
  for (const entry of (raw ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    const match = /^([a-z0-9_]+)=(\d+)\/(\d+)$/.exec(entry);
    if (!match) throw new ConfigError("RATE_LIMITS", `"${entry}" is not rule=limit/periodSeconds`);
    const [, name, limit, period] = match as unknown as [string, string, string, string];
    const rule = rules[name];
    if (!rule) throw new ConfigError("RATE_LIMITS", `unknown rule "${name}"; known: ${Object.keys(rules).join(", ")}`);
    if (Number(limit) < 1 || Number(period) < 1) throw new ConfigError("RATE_LIMITS", `"${entry}" needs a limit and period of at least 1`);
    rules[name] = { ...rule, limit: Number(limit), periodSeconds: Number(period) };
  }
  return rules;
}

/**
 * Browsers run WebAuthn only in a secure context (https, or http on localhost),
 * and only for an RP ID that is the page's host or a parent domain of it: an
 * IP address never qualifies, so a page at http://127.0.0.1 cannot use passkeys.
 * Set explicitly, a relying party browsers would refuse stops the start; taken
 * from an APP_URL they would refuse (a LAN address, plain http), it only turns
 * passkeys off, since a deployment that never uses them must still start.
 */
function parseWebauthn(
  read: (name: string) => string | undefined,
  int: (name: string, fallback: number, min: number, max: number) => number,
  list: (name: string) => string[],
  appUrl: string,
  productName: string,
): Config["webauthn"] {
  const explicitRpId = read("WEBAUTHN_RP_ID");
  const explicitOrigins = list("WEBAUTHN_ORIGINS");
  const rpId = (explicitRpId ?? new URL(appUrl).hostname).toLowerCase();
  const origins = explicitOrigins.length > 0 ? explicitOrigins : [new URL(appUrl).origin];
  const problem = relyingPartyProblem(rpId, origins, explicitRpId ? "WEBAUTHN_RP_ID" : "APP_URL", explicitOrigins.length > 0 ? "WEBAUTHN_ORIGINS" : "APP_URL");
  if (problem && (explicitRpId || explicitOrigins.length > 0)) throw problem;
  return {
    rpId,
    rpName: read("WEBAUTHN_RP_NAME") ?? productName,
    origins,
    challengeTtlSeconds: int("WEBAUTHN_CHALLENGE_TTL_SECONDS", 5 * minute, 30, 10 * minute),
    unavailable: problem?.message,
  };
}

function relyingPartyProblem(rpId: string, origins: string[], rpIdFrom: string, originsFrom: string): ConfigError | undefined {
  if (!/^(?=.*[a-z])[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(rpId)) {
    return new ConfigError(rpIdFrom, `"${rpId}" is not a domain like example.com (an IP address cannot be a relying party)`);
  }
  for (const origin of origins) {
    const url = URL.canParse(origin) ? new URL(origin) : undefined;
    if (!url || url.origin !== origin) return new ConfigError(originsFrom, `"${origin}" is not an origin like https://app.example.com`);
    if (url.protocol !== "https:" && !(url.hostname === "localhost" || url.hostname.endsWith(".localhost"))) {
      return new ConfigError(originsFrom, `"${origin}": browsers allow passkeys only on https (or http://localhost)`);
    }
    if (url.hostname !== rpId && !url.hostname.endsWith(`.${rpId}`)) {
      return new ConfigError(originsFrom, `"${origin}" is not on WEBAUTHN_RP_ID "${rpId}" or a subdomain of it`);
    }
  }
  return undefined;
}

/** An http(s) URL without a trailing slash, or a ConfigError naming the variable. */
function httpUrl(name: string, value: string): string {
  if (!/^https?:\/\/[^/]/.test(value)) throw new ConfigError(name, `expected an http(s) URL, got "${value}"`);
  return value.replace(/\/$/, "");
}

function parseEmail(
  read: (name: string) => string | undefined,
  int: (name: string, fallback: number, min: number, max: number) => number,
  shared: boolean,
): EmailConfig {
  // As for SMS: the console prints codes and reset links, so a shared deployment must ask for it.
  const provider = read("EMAIL_PROVIDER") ?? (shared ? undefined : "console");
  if (!provider) {
    throw new ConfigError("EMAIL_PROVIDER", "required with DATABASE_URL: smtp or webhook (console prints mails on stdout: only for a test deployment)");
  }
  const from = read("EMAIL_FROM") ?? "Portcullis <no-reply@localhost>";
  if (!/@/.test(from)) throw new ConfigError("EMAIL_FROM", `expected an address like "Portcullis <no-reply@example.com>", got "${from}"`);
  const timeoutMs = int("EMAIL_TIMEOUT_MS", 10_000, 100, 120_000);
  switch (provider) {
    case "console":
      return { provider, from, timeoutMs };
    case "webhook": {
      const url = read("EMAIL_WEBHOOK_URL");
      if (!url) throw new ConfigError("EMAIL_WEBHOOK_URL", "required with EMAIL_PROVIDER=webhook");
      return { provider, from, timeoutMs, webhook: { url: httpUrl("EMAIL_WEBHOOK_URL", url), secret: read("EMAIL_WEBHOOK_SECRET") } };
    }
    case "smtp": {
      const smtpUrl = read("SMTP_URL");
      if (!smtpUrl) throw new ConfigError("SMTP_URL", "required with EMAIL_PROVIDER=smtp, e.g. smtps://user:password@smtp.example.com:465");
      if (!/^smtps?:\/\//.test(smtpUrl) || !URL.canParse(smtpUrl) || !new URL(smtpUrl).hostname) throw new ConfigError("SMTP_URL", "expected an smtp:// or smtps:// URL");
      return { provider, from, timeoutMs, smtpUrl, smtpCa: certificatesIn("SMTP_CA_FILE", read("SMTP_CA_FILE")) };
    }
    default:
      throw new ConfigError("EMAIL_PROVIDER", `expected one of console, webhook, smtp, got "${provider}"`);
  }
}

/** The PEM certificates in the file `path` names, read at start-up so a wrong path stops it there. */
function certificatesIn(name: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError(name, `cannot read "${path}" (${(error as NodeJS.ErrnoException).code ?? "unreadable"})`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) throw new ConfigError(name, `"${path}" holds no PEM certificate`);
  return pem;
}

/** Entries that IpRanges, which matches them later, accepts; checked here so a bad one names its variable at start-up. */
function ipRanges(name: string, entries: string[]): string[] {
  try {
    new IpRanges(entries);
  } catch (error) {
    if (error instanceof IpRangeError) throw new ConfigError(name, error.message);
    throw error;
  }
  return entries;
}

/** Long enough that guessing it is no way past the captcha. */
export const minCaptchaTestTokenLength = 32;

/** The rule for a captcha test token from anywhere (CAPTCHA_TEST_TOKEN, a guarded service's options). */
export function captchaTestTokenLongEnough(token: string): boolean {
  return token.length >= minCaptchaTestTokenLength;
}

/**
 * The token that passes every captcha check. A shared deployment (one with
 * DATABASE_URL) refuses it unless CAPTCHA_ALLOW_TEST_TOKEN says it is a test
 * deployment: a test setting copied into production would let bots through.
 */
function captchaTestToken(token: string | undefined, shared: boolean, allowed: boolean): string | undefined {
  if (token === undefined) return undefined;
  if (!captchaTestTokenLongEnough(token)) {
    throw new ConfigError("CAPTCHA_TEST_TOKEN", `expected at least ${minCaptchaTestTokenLength} characters: whoever guesses it skips every captcha`);
  }
  if (shared && !allowed) {
    throw new ConfigError("CAPTCHA_TEST_TOKEN", "refused with DATABASE_URL, where it would let bots past every captcha; on a test deployment set CAPTCHA_ALLOW_TEST_TOKEN=true too");
  }
  return token;
}

function parseCaptcha(
  read: (name: string) => string | undefined,
  int: (name: string, fallback: number, min: number, max: number) => number,
  list: (name: string) => string[],
  shared: boolean,
): CaptchaConfig {
  // Like SMS_PROVIDER: a shared deployment says so when it runs without bot defence.
  const provider = read("CAPTCHA_PROVIDER") ?? (shared ? undefined : "none");
  if (!provider) {
    throw new ConfigError("CAPTCHA_PROVIDER", "required with DATABASE_URL: turnstile, hcaptcha or recaptcha (or none to run without a captcha)");
  }
  if (!["none", ...Object.keys(captchaVerifyUrls)].includes(provider)) {
    throw new ConfigError("CAPTCHA_PROVIDER", `expected one of none, turnstile, hcaptcha, recaptcha, got "${provider}"`);
  }
  const name = provider as CaptchaProviderName;
  const required = (variable: string) => {
    const value = read(variable);
    if (!value && name !== "none") throw new ConfigError(variable, `required with CAPTCHA_PROVIDER=${name}`);
    return value;
  };
  const allowIps = ipRanges("CAPTCHA_ALLOW_IPS", list("CAPTCHA_ALLOW_IPS"));
  const minScore = Number(read("CAPTCHA_MIN_SCORE") ?? "0.5");
  if (!(minScore >= 0 && minScore <= 1)) throw new ConfigError("CAPTCHA_MIN_SCORE", `expected a number from 0 to 1, got "${read("CAPTCHA_MIN_SCORE")}"`);
  const flag = (variable: string) => {
    const value = read(variable) ?? "false";
    if (value !== "true" && value !== "false") throw new ConfigError(variable, `expected true or false, got "${value}"`);
    return value === "true";
  };
  return {
    provider: name,
    secret: required("CAPTCHA_SECRET"),
    siteKey: required("CAPTCHA_SITE_KEY"),
    verifyUrl: name === "none" ? undefined : httpUrl("CAPTCHA_VERIFY_URL", read("CAPTCHA_VERIFY_URL") ?? captchaVerifyUrls[name]),
    minScore,
    expectedAction: read("CAPTCHA_EXPECTED_ACTION"),
    allowIps,
    testToken: captchaTestToken(read("CAPTCHA_TEST_TOKEN"), shared, flag("CAPTCHA_ALLOW_TEST_TOKEN")),
    failureThreshold: int("CAPTCHA_FAILURE_THRESHOLD", 3, 1, 1000),
    failureWindowSeconds: int("CAPTCHA_FAILURE_WINDOW_SECONDS", 15 * minute, 10, day),
    failOpenAfterFailures: flag("CAPTCHA_FAIL_OPEN_AFTER_FAILURES"),
    timeoutMs: int("CAPTCHA_TIMEOUT_MS", 5000, 100, 60_000),
  };
}

function parseSms(
  read: (name: string) => string | undefined,
  int: (name: string, fallback: number, min: number, max: number) => number,
  shared: boolean,
): SmsConfig {
  // The console prints codes: the embedded default's channel, never a shared deployment's unless asked for.
  const provider = read("SMS_PROVIDER") ?? (shared ? undefined : "console");
  if (!provider) {
    throw new ConfigError("SMS_PROVIDER", "required with DATABASE_URL: webhook or twilio (console prints the codes on stdout: only for a test deployment)");
  }
  const timeoutMs = int("SMS_TIMEOUT_MS", 5000, 100, 60_000);
  const required = (name: string) => {
    const value = read(name);
    if (!value) throw new ConfigError(name, `required with SMS_PROVIDER=${provider}`);
    return value;
  };
  switch (provider) {
    case "console":
      return { provider, timeoutMs };
    case "webhook":
      return { provider, timeoutMs, webhook: { url: httpUrl("SMS_WEBHOOK_URL", required("SMS_WEBHOOK_URL")), secret: read("SMS_WEBHOOK_SECRET") } };
    case "twilio": {
      const from = read("TWILIO_FROM");
      const messagingServiceSid = read("TWILIO_MESSAGING_SERVICE_SID");
      if (!from && !messagingServiceSid) throw new ConfigError("TWILIO_FROM", "set TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID");
      return {
        provider,
        timeoutMs,
        twilio: {
          accountSid: required("TWILIO_ACCOUNT_SID"),
          authToken: required("TWILIO_AUTH_TOKEN"),
          from,
          messagingServiceSid,
          baseUrl: httpUrl("TWILIO_BASE_URL", read("TWILIO_BASE_URL") ?? "https://api.twilio.com"),
        },
      };
    }
    default:
      throw new ConfigError("SMS_PROVIDER", `expected one of console, webhook, twilio, got "${provider}"`);
  }
}
