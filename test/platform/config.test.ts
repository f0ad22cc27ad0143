import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
    expect(loadConfig({ ...shared, SMS_PROVIDER: "console", EMAIL_PROVIDER: "console", OTP_ALLOWED_COUNTRIES: "*", CAPTCHA_PROVIDER: "none" }).sms.provider).to.equal("console");
    expect(() => loadConfig({ KEY_ENCRYPTION_KEY: "c2hvcnQ=" })).to.throw(ConfigError, /^KEY_ENCRYPTION_KEY: expected 32 bytes/);
    expect(() => loadConfig({ TRUSTED_PROXIES: "proxy.local" })).to.throw(ConfigError, /^TRUSTED_PROXIES:/);
    expect(() => loadConfig({ TRUSTED_PROXIES: "10.0.0.0/33" }), "read as the resolver reads it").to.throw(ConfigError, /^TRUSTED_PROXIES: "10.0.0.0\/33" is not an IP address or CIDR/);
    expect(() => loadConfig({ CORS_ORIGINS: "*" })).to.throw(ConfigError, /^CORS_ORIGINS:/);
    expect(() => loadConfig({ GATEWAY_UPSTREAM_TIMEOUT_MS: "0" }), "a forwarded call needs a deadline").to.throw(ConfigError, /^GATEWAY_UPSTREAM_TIMEOUT_MS:/);
  });

  it("sends codes to every country only when asked for, or on the embedded default", () => {
    const shared = {
      DATABASE_URL: "postgres://db/x", REDIS_URL: "redis://r", KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString("base64"), SMS_PROVIDER: "console", EMAIL_PROVIDER: "console",
      CAPTCHA_PROVIDER: "none",
    };
    expect(() => loadConfig(shared)).to.throw(ConfigError, /^OTP_ALLOWED_COUNTRIES: required with DATABASE_URL/);
    expect(loadConfig({ ...shared, OTP_ALLOWED_COUNTRIES: "*" }).otp.allowedCountries, "* is every country").to.deep.equal([]);
    expect(loadConfig({ ...shared, OTP_ALLOWED_COUNTRIES: "GB, IE" }).otp.allowedCountries).to.deep.equal(["GB", "IE"]);
    expect(() => loadConfig({ ...shared, OTP_ALLOWED_COUNTRIES: "GB,*" })).to.throw(ConfigError, /^OTP_ALLOWED_COUNTRIES: "\*" is not/);
    expect(loadConfig({}).otp.allowedCountries, "the embedded default").to.deep.equal([]);
    const { SMS_PROVIDER: _, EMAIL_PROVIDER: __, CAPTCHA_PROVIDER: ___, ...admin } = shared;
    expect(loadConfig(admin, { sendsCodes: false }).databaseUrl, "the admin CLI needs no SMS or email settings").to.equal(shared.DATABASE_URL);
  });

  describe("email delivery", () => {
    const shared = {
      DATABASE_URL: "postgres://db/x", REDIS_URL: "redis://r", KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString("base64"), SMS_PROVIDER: "console", OTP_ALLOWED_COUNTRIES: "*", CAPTCHA_PROVIDER: "none",
    };
    let folder: string;
    before(() => {
      folder = mkdtempSync(join(tmpdir(), "portcullis-config-"));
    });
    after(() => rmSync(folder, { recursive: true, force: true }));

    it("prints mails on stdout on the embedded default, and a shared deployment must choose a provider (console only when asked for)", () => {
      expect(loadConfig({}).email).to.deep.equal({ provider: "console", from: "Portcullis <no-reply@localhost>", timeoutMs: 10_000 });
      expect(() => loadConfig(shared)).to.throw(ConfigError, /^EMAIL_PROVIDER: required with DATABASE_URL/);
      expect(loadConfig({ ...shared, EMAIL_PROVIDER: "console" }).email.provider).to.equal("console");
      expect(() => loadConfig({ EMAIL_PROVIDER: "sendgrid" })).to.throw(ConfigError, /^EMAIL_PROVIDER: expected one of console, webhook, smtp/);
    });

    it("takes the sender and a timeout", () => {
      const { email } = loadConfig({ ...shared, EMAIL_PROVIDER: "console", EMAIL_FROM: "Acme <security@acme.test>", EMAIL_TIMEOUT_MS: "2500" });
      expect(email).to.include({ from: "Acme <security@acme.test>", timeoutMs: 2500 });
      expect(() => loadConfig({ EMAIL_FROM: "Acme" })).to.throw(ConfigError, /^EMAIL_FROM: expected an address/);
      expect(() => loadConfig({ EMAIL_TIMEOUT_MS: "0" })).to.throw(ConfigError, /^EMAIL_TIMEOUT_MS:/);
    });

    it("posts to a webhook, which needs its URL", () => {
      expect(() => loadConfig({ ...shared, EMAIL_PROVIDER: "webhook" })).to.throw(ConfigError, /^EMAIL_WEBHOOK_URL: required with EMAIL_PROVIDER=webhook/);
      expect(() => loadConfig({ EMAIL_PROVIDER: "webhook", EMAIL_WEBHOOK_URL: "mail.example.com/hook" })).to.throw(ConfigError, /^EMAIL_WEBHOOK_URL: expected an http\(s\) URL/);
      const { email } = loadConfig({ ...shared, EMAIL_PROVIDER: "webhook", EMAIL_WEBHOOK_URL: "https://mail.example.com/hook/", EMAIL_WEBHOOK_SECRET: "s" });
      expect(email.webhook).to.deep.equal({ url: "https://mail.example.com/hook", secret: "s" });
    });

    it("sends by SMTP to an smtp:// or smtps:// URL, without quoting the URL (it may hold a password) when it is wrong", () => {
      expect(() => loadConfig({ EMAIL_PROVIDER: "smtp" })).to.throw(ConfigError, /^SMTP_URL: required with EMAIL_PROVIDER=smtp/);
      for (const wrong of ["https://user:hunter22@mail.example.com", "smtp://", "smtp://user:hunter22@", "mail.example.com:587", "smtp://user:hunter22@exa mple.com"]) {
        expect(() => loadConfig({ EMAIL_PROVIDER: "smtp", SMTP_URL: wrong }), wrong).to.throw(ConfigError, /^SMTP_URL: expected an smtp:\/\/ or smtps:\/\/ URL$/);
      }
      const url = "smtps://mailer:hunter22@mail.example.com:465";
      expect(loadConfig({ ...shared, EMAIL_PROVIDER: "smtp", SMTP_URL: url }).email).to.include({ provider: "smtp", smtpUrl: url, smtpCa: undefined });
    });

    it("trusts the certificates of SMTP_CA_FILE for the SMTP server, and stops at start-up when the file is missing or holds none", () => {
      const ca = join(folder, "ca.pem");
      const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
      writeFileSync(ca, pem);
      const smtp = { EMAIL_PROVIDER: "smtp", SMTP_URL: "smtp://mail.example.com" };
      expect(loadConfig({ ...smtp, SMTP_CA_FILE: ca }).email.smtpCa).to.equal(pem);
      expect(() => loadConfig({ ...smtp, SMTP_CA_FILE: join(folder, "missing.pem") })).to.throw(ConfigError, /^SMTP_CA_FILE: cannot read ".*missing\.pem" \(ENOENT\)/);
      writeFileSync(join(folder, "key.pem"), "-----BEGIN PRIVATE KEY-----\n");
      expect(() => loadConfig({ ...smtp, SMTP_CA_FILE: join(folder, "key.pem") })).to.throw(ConfigError, /^SMTP_CA_FILE: ".*key\.pem" holds no PEM certificate/);
    });

    it("needs no email settings for a tool that sends nothing (sendsCodes: false)", () => {
      const { SMS_PROVIDER: _, ...admin } = shared;
      expect(loadConfig(admin, { sendsCodes: false }).email.provider).to.equal("console");
    });
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

  describe("captcha", () => {
    const shared = {
      DATABASE_URL: "postgres://db/x", REDIS_URL: "redis://r", KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString("base64"),
      SMS_PROVIDER: "console", EMAIL_PROVIDER: "console", OTP_ALLOWED_COUNTRIES: "*",
    };
    const turnstile = { CAPTCHA_PROVIDER: "turnstile", CAPTCHA_SECRET: "0x-secret", CAPTCHA_SITE_KEY: "0x-site" };

    it("is off on the embedded default, and a shared deployment must choose (none only when asked for)", () => {
      expect(loadConfig({}).captcha.provider).to.equal("none");
      expect(() => loadConfig(shared)).to.throw(ConfigError, /^CAPTCHA_PROVIDER: required with DATABASE_URL/);
      expect(loadConfig({ ...shared, CAPTCHA_PROVIDER: "none" }).captcha.provider).to.equal("none");
      expect(loadConfig(shared, { sendsCodes: false }).captcha.provider, "the admin CLI serves no call").to.equal("none");
      expect(() => loadConfig({ CAPTCHA_PROVIDER: "funcaptcha" })).to.throw(ConfigError, /^CAPTCHA_PROVIDER: expected one of none, turnstile, hcaptcha, recaptcha/);
    });

    it("needs the secret and the site key of a provider, and knows each provider's siteverify URL", () => {
      expect(() => loadConfig({ CAPTCHA_PROVIDER: "hcaptcha", CAPTCHA_SITE_KEY: "site" })).to.throw(ConfigError, /^CAPTCHA_SECRET: required with CAPTCHA_PROVIDER=hcaptcha/);
      expect(() => loadConfig({ CAPTCHA_PROVIDER: "hcaptcha", CAPTCHA_SECRET: "s" })).to.throw(ConfigError, /^CAPTCHA_SITE_KEY: required with CAPTCHA_PROVIDER=hcaptcha/);
      const urls = Object.fromEntries(
        ["turnstile", "hcaptcha", "recaptcha"].map((provider) => [provider, loadConfig({ ...turnstile, CAPTCHA_PROVIDER: provider }).captcha.verifyUrl]),
      );
      expect(urls).to.deep.equal({
        turnstile: "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        hcaptcha: "https://api.hcaptcha.com/siteverify",
        recaptcha: "https://www.google.com/recaptcha/api/siteverify",
      });
      expect(loadConfig({ ...turnstile, CAPTCHA_VERIFY_URL: "http://127.0.0.1:9/siteverify" }).captcha.verifyUrl).to.equal("http://127.0.0.1:9/siteverify");
      expect(() => loadConfig({ ...turnstile, CAPTCHA_VERIFY_URL: "siteverify" })).to.throw(ConfigError, /^CAPTCHA_VERIFY_URL: expected an http\(s\) URL/);
    });

    it("has the design's defaults, and checks every setting", () => {
      expect(loadConfig({ ...shared, ...turnstile }).captcha).to.deep.equal({
        provider: "turnstile", secret: "0x-secret", siteKey: "0x-site", verifyUrl: "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        minScore: 0.5, expectedAction: undefined, allowIps: [], testToken: undefined,
        failureThreshold: 3, failureWindowSeconds: 900, failOpenAfterFailures: false, timeoutMs: 5000,
      });
      const tuned = loadConfig({
        ...turnstile, CAPTCHA_MIN_SCORE: "0.7", CAPTCHA_EXPECTED_ACTION: "login", CAPTCHA_ALLOW_IPS: "10.0.0.0/8, 2001:db8::/32,192.0.2.7",
        CAPTCHA_TEST_TOKEN: "XXXX.DUMMY.TOKEN.FOR.END.TO.END.TESTS", CAPTCHA_FAILURE_THRESHOLD: "5", CAPTCHA_FAILURE_WINDOW_SECONDS: "600", CAPTCHA_FAIL_OPEN_AFTER_FAILURES: "true", CAPTCHA_TIMEOUT_MS: "2000",
      }).captcha;
      expect(tuned).to.deep.include({
        minScore: 0.7, expectedAction: "login", allowIps: ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], testToken: "XXXX.DUMMY.TOKEN.FOR.END.TO.END.TESTS",
        failureThreshold: 5, failureWindowSeconds: 600, failOpenAfterFailures: true, timeoutMs: 2000,
      });
      expect(() => loadConfig({ CAPTCHA_MIN_SCORE: "1.5" })).to.throw(ConfigError, /^CAPTCHA_MIN_SCORE: expected a number from 0 to 1/);
      expect(() => loadConfig({ CAPTCHA_MIN_SCORE: "high" })).to.throw(ConfigError, /^CAPTCHA_MIN_SCORE:/);
      for (const wrong of ["office", "10.0.0.0/33", "10.0.0.0/8/1", "2001:db8::/129"]) {
        expect(() => loadConfig({ CAPTCHA_ALLOW_IPS: wrong }), wrong).to.throw(ConfigError, /^CAPTCHA_ALLOW_IPS:/);
      }
      expect(() => loadConfig({ CAPTCHA_FAILURE_THRESHOLD: "0" })).to.throw(ConfigError, /^CAPTCHA_FAILURE_THRESHOLD:/);
      expect(() => loadConfig({ CAPTCHA_FAIL_OPEN_AFTER_FAILURES: "yes" })).to.throw(ConfigError, /^CAPTCHA_FAIL_OPEN_AFTER_FAILURES: expected true or false/);
      expect(() => loadConfig({ CAPTCHA_TIMEOUT_MS: "10" })).to.throw(ConfigError, /^CAPTCHA_TIMEOUT_MS:/);
    });

    it("refuses a guessable test token, and one on a shared deployment unless CAPTCHA_ALLOW_TEST_TOKEN=true says it is a test one", () => {
      const token = "a-test-token-of-exactly-32-chars";
      expect(() => loadConfig({ ...turnstile, CAPTCHA_TEST_TOKEN: token.slice(1) })).to.throw(ConfigError, /^CAPTCHA_TEST_TOKEN: expected at least 32 characters/);
      expect(loadConfig({ ...turnstile, CAPTCHA_TEST_TOKEN: token }).captcha.testToken, "the embedded default is for tests").to.equal(token);
      expect(() => loadConfig({ ...shared, ...turnstile, CAPTCHA_TEST_TOKEN: token })).to.throw(ConfigError, /^CAPTCHA_TEST_TOKEN: refused with DATABASE_URL/);
      expect(() => loadConfig({ ...shared, ...turnstile, CAPTCHA_TEST_TOKEN: token, CAPTCHA_ALLOW_TEST_TOKEN: "false" })).to.throw(ConfigError, /^CAPTCHA_TEST_TOKEN: refused/);
      expect(loadConfig({ ...shared, ...turnstile, CAPTCHA_TEST_TOKEN: token, CAPTCHA_ALLOW_TEST_TOKEN: "true" }).captcha.testToken).to.equal(token);
      expect(() => loadConfig({ CAPTCHA_ALLOW_TEST_TOKEN: "yes" })).to.throw(ConfigError, /^CAPTCHA_ALLOW_TEST_TOKEN: expected true or false/);
    });
  });

  describe("passkeys", () => {
    it("take their relying party from APP_URL: its host and origin", () => {
      expect(loadConfig({}).webauthn).to.deep.include({ rpId: "localhost", origins: ["http://localhost:8080"], rpName: "Portcullis", unavailable: undefined });
      expect(loadConfig({ APP_URL: "https://app.acme.example" }).webauthn).to.deep.include({ rpId: "app.acme.example", origins: ["https://app.acme.example"] });
    });

    it("are only turned off, not the start refused, by an APP_URL browsers would not take as a relying party", () => {
      expect(loadConfig({ APP_URL: "http://127.0.0.1:8080" }).webauthn.unavailable).to.match(/^APP_URL: "127.0.0.1" is not a domain/);
      expect(loadConfig({ APP_URL: "http://auth.internal:8080" }).webauthn.unavailable).to.match(/^APP_URL: .*only on https/);
    });

    it("refuse to start with a relying party set explicitly that browsers would refuse", () => {
      expect(() => loadConfig({ WEBAUTHN_RP_ID: "10.0.0.1" })).to.throw(ConfigError, /^WEBAUTHN_RP_ID: "10.0.0.1" is not a domain/);
      expect(() => loadConfig({ WEBAUTHN_ORIGINS: "http://app.acme.example" })).to.throw(ConfigError, /^WEBAUTHN_ORIGINS: .*only on https/);
      expect(() => loadConfig({ WEBAUTHN_RP_ID: "acme.example", WEBAUTHN_ORIGINS: "https://evil.example" })).to.throw(
        ConfigError,
        /^WEBAUTHN_ORIGINS: "https:\/\/evil.example" is not on WEBAUTHN_RP_ID "acme.example"/,
      );
      expect(loadConfig({ WEBAUTHN_RP_ID: "acme.example", WEBAUTHN_ORIGINS: "https://app.acme.example,https://acme.example" }).webauthn.origins).to.have.length(2);
    });
  });

  it("overrides named rate limits and rejects unknown ones", () => {
    const config = loadConfig({ RATE_LIMITS: "otp_send_phone=5/600, api_ip=10/1" });
    expect(config.rateLimits.otp_send_phone).to.deep.include({ limit: 5, periodSeconds: 600 });
    expect(config.rateLimits.api_ip).to.deep.equal({ limit: 10, periodSeconds: 1, failOpen: true });
    expect(() => loadConfig({ RATE_LIMITS: "nope=1/1" })).to.throw(ConfigError, /unknown rule "nope"/);
  });
});
