import { expect } from "chai";
import { ConfigError, loadConfig } from "../../services/platform/config.js";

describe("Configuration", () => {
  it("runs on the embedded default with no environment at all", () => {
    const config = loadConfig({});
    expect(config).to.include({ mode: "all", grpcPort: 50051, httpPort: 8080, databaseUrl: undefined, redisUrl: undefined });
    expect(config.gatewayUpstreamTimeoutMs).to.equal(10_000);
    expect(config.jwt).to.include({ algorithm: "ES256", accessTokenTtlSeconds: 900 });
    expect(config.rateLimits.otp_send_phone).to.deep.equal({ limit: 3, periodSeconds: 3600, failOpen: false });
  });

  it("names the variable at fault", () => {
    expect(() => loadConfig({ GRPC_PORT: "http" })).to.throw(ConfigError, /^GRPC_PORT: expected a whole number/);
    expect(() => loadConfig({ JWT_ALGORITHM: "HS256" })).to.throw(ConfigError, /^JWT_ALGORITHM: expected one of ES256, RS256, EdDSA/);
    expect(() => loadConfig({ DATABASE_URL: "postgres://db/x" })).to.throw(ConfigError, /^REDIS_URL:/);
    expect(() => loadConfig({ DATABASE_URL: "postgres://db/x", REDIS_URL: "redis://r" })).to.throw(ConfigError, /^KEY_ENCRYPTION_KEY: required/);
    const shared = { DATABASE_URL: "postgres://db/x", REDIS_URL: "redis://r", KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString("base64") };
    expect(() => loadConfig({ ...shared, OTP_ALLOWED_COUNTRIES: "GB" }), "codes on stdout only when asked for").to.throw(ConfigError, /^SMS_PROVIDER: required with DATABASE_URL/);
    expect(loadConfig({ ...shared, SMS_PROVIDER: "console", OTP_ALLOWED_COUNTRIES: "*" }).sms.provider).to.equal("console");
    expect(() => loadConfig({ KEY_ENCRYPTION_KEY: "c2hvcnQ=" })).to.throw(ConfigError, /^KEY_ENCRYPTION_KEY: expected 32 bytes/);
    expect(() => loadConfig({ TRUSTED_PROXIES: "proxy.local" })).to.throw(ConfigError, /^TRUSTED_PROXIES:/);
    expect(() => loadConfig({ CORS_ORIGINS: "*" })).to.throw(ConfigError, /^CORS_ORIGINS:/);
    expect(() => loadConfig({ GATEWAY_UPSTREAM_TIMEOUT_MS: "0" }), "a forwarded call needs a deadline").to.throw(ConfigError, /^GATEWAY_UPSTREAM_TIMEOUT_MS:/);
  });

  it("sends codes to every country only when asked for, or on the embedded default", () => {
    const shared = { DATABASE_URL: "postgres://db/x", REDIS_URL: "redis://r", KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString("base64"), SMS_PROVIDER: "console" };
    expect(() => loadConfig(shared)).to.throw(ConfigError, /^OTP_ALLOWED_COUNTRIES: required with DATABASE_URL/);
    expect(loadConfig({ ...shared, OTP_ALLOWED_COUNTRIES: "*" }).otp.allowedCountries, "* is every country").to.deep.equal([]);
    expect(loadConfig({ ...shared, OTP_ALLOWED_COUNTRIES: "GB, IE" }).otp.allowedCountries).to.deep.equal(["GB", "IE"]);
    expect(() => loadConfig({ ...shared, OTP_ALLOWED_COUNTRIES: "GB,*" })).to.throw(ConfigError, /^OTP_ALLOWED_COUNTRIES: "\*" is not/);
    expect(loadConfig({}).otp.allowedCountries, "the embedded default").to.deep.equal([]);
    const { SMS_PROVIDER: _, ...admin } = shared;
    expect(loadConfig(admin, { sendsCodes: false }).databaseUrl, "the admin CLI needs no SMS settings").to.equal(shared.DATABASE_URL);
  });

  it("budgets SMS for a young app: 60 a minute, 100 an hour per country, 10 an hour per number prefix", () => {
    const config = loadConfig({});
    expect(config.rateLimits.otp_send_global).to.deep.include({ limit: 60, periodSeconds: 60 });
    expect(config.otp).to.include({ countryHourlyBudget: 100, prefixHourlyBudget: 10, prefixDigits: 6 });
  });

  it("caps password lockouts at an hour, and refuses a first lock longer than the cap", () => {
    expect(loadConfig({}).password).to.deep.equal({ lockoutThreshold: 5, accountLockoutThreshold: 20, lockoutBaseSeconds: 900, lockoutMaxSeconds: 3600 });
    expect(loadConfig({ PASSWORD_LOCKOUT_MAX_SECONDS: "600" }).password.lockoutBaseSeconds, "the default base fits the cap").to.equal(600);
    expect(() => loadConfig({ PASSWORD_LOCKOUT_BASE_SECONDS: "7200" })).to.throw(ConfigError, /^PASSWORD_LOCKOUT_BASE_SECONDS: must not exceed/);
  });

  it("overrides named rate limits and rejects unknown ones", () => {
    const config = loadConfig({ RATE_LIMITS: "otp_send_phone=5/600, api_ip=10/1" });
    expect(config.rateLimits.otp_send_phone).to.deep.include({ limit: 5, periodSeconds: 600 });
    expect(config.rateLimits.api_ip).to.deep.equal({ limit: 10, periodSeconds: 1, failOpen: true });
    expect(() => loadConfig({ RATE_LIMITS: "nope=1/1" })).to.throw(ConfigError, /unknown rule "nope"/);
  });
});
