import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import pg from "pg";
import type { Running } from "../../services/app/servers.js";
import { MemoryFailureCounter } from "../../services/policy/failure-counter.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { sharedStores, startPlatform } from "../support/platform.js";
import { expectNoSecretLeaked } from "../support/secrets.js";
import { newPhone, registerVerified } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { dropTestDatabases } from "../support/stores.js";

const device = { deviceId: "captcha-device", deviceType: DeviceType.WEB, deviceName: "Browser" };
let ipCounter = 1;
/** A fresh client address per test (the platform trusts loopback as a proxy), so one test's failures never count in another. */
const newIp = () => `198.51.100.${ipCounter++}`;
const from = (ip: string, token?: string): Record<string, string> => ({ "x-forwarded-for": ip, ...(token ? { "x-captcha-token": token } : {}) });
const newEmail = () => `captcha-${randomUUID().slice(0, 8)}@example.com`;

/**
 * A local stand-in for the providers' siteverify endpoints, in each one's
 * answer shape. A token "pass-…" is good; for reCAPTCHA v3 "pass:<score>:<action>-…".
 */
class Siteverify {
  readonly received: { provider: string; form: URLSearchParams }[] = [];
  /** down: HTTP 503; garbage: 200 with a body that is not JSON. */
  state: "up" | "down" | "garbage" = "up";
  private server?: Server;

  constructor(private readonly secret: string) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        const provider = req.url!.slice(1);
        const form = new URLSearchParams(body);
        this.received.push({ provider, form });
        if (this.state === "down") return res.writeHead(503).end();
        if (this.state === "garbage") return res.writeHead(200, { "content-type": "text/html" }).end("<html>maintenance</html>");
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(this.answer(provider, form)));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private answer(provider: string, form: URLSearchParams): object {
    const token = form.get("response") ?? "";
    if (form.get("secret") !== this.secret) return { success: false, "error-codes": ["invalid-input-secret"] };
    if (provider === "recaptcha") {
      const match = /^pass:([\d.]+):(\w+)-/.exec(token);
      if (!match) return { success: false, "error-codes": ["invalid-input-response"] };
      return { success: true, score: Number(match[1]), action: match[2], challenge_ts: new Date().toISOString(), hostname: "app.example.com" };
    }
    const success = token.startsWith("pass-");
    const shape = provider === "turnstile" ? { cdata: "" } : { credit: false };
    return success
      ? { success, challenge_ts: new Date().toISOString(), hostname: "app.example.com", "error-codes": [], ...shape }
      : { success, "error-codes": ["invalid-input-response"] };
  }

  tokensSeen(): string[] {
    return this.received.map((r) => r.form.get("response")!);
  }

  stop(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** The ErrorInfo of a refused gRPC call. */
const errorInfo = (error: grpc.ServiceError | undefined) => detailOf(grpcErrorDetails(error!), ErrorInfoSchema);

describe("Captcha", () => {
  const secret = `captcha-secret-${randomUUID()}`;
  const siteverify = new Siteverify(secret);
  const sms = new SmsInbox();
  const mail = new MailInbox();
  const secrets: string[] = [secret];
  /** A good token, remembered so the logs and audit rows can be searched for it. */
  const pass = (prefix = "pass-") => {
    const token = `${prefix}${randomUUID()}`;
    secrets.push(token);
    return token;
  };
  let standIn: string;
  let delivery: Record<string, string>;

  before(async () => {
    standIn = await siteverify.start();
    delivery = { ...(await sms.env()), ...(await mail.env()) };
  });

  after(async () => {
    await siteverify.stop();
    await sms.stop();
    await mail.stop();
    await dropTestDatabases();
  });

  /** A platform with the captcha settings given, trusting loopback as a proxy so tests choose their client address. */
  async function platformWith(captcha: Record<string, string>, logLines: string[]) {
    const stores = await sharedStores();
    const running = await startPlatform(
      {
        ...stores,
        ...delivery,
        TRUSTED_PROXIES: "127.0.0.1",
        CORS_ORIGINS: "https://app.example.com",
        OTP_RESEND_COOLDOWN_SECONDS: "0",
        RATE_LIMITS: "otp_send_ip=1000/3600,otp_send_phone=1000/3600,otp_verify_ip=1000/3600,login_ip=1000/900,login_email=1000/900,register_ip=1000/3600",
        CAPTCHA_SECRET: secret,
        CAPTCHA_SITE_KEY: "site-key-for-the-widget",
        ...captcha,
      },
      logLines,
    );
    const db = new pg.Client({ connectionString: stores.DATABASE_URL });
    await db.connect();
    return { running, db, auth: grpcClient(AuthService, running.grpcPort!) };
  }

  describe("with Cloudflare Turnstile", () => {
    const logLines: string[] = [];
    const testToken = `XXXX.DUMMY.TOKEN.${randomUUID()}`;
    let running: Running;
    let db: pg.Client;
    let auth: ReturnType<typeof grpcClient<typeof AuthService>>;

    before(async () => {
      secrets.push(testToken);
      ({ running, db, auth } = await platformWith(
        {
          CAPTCHA_PROVIDER: "turnstile",
          CAPTCHA_VERIFY_URL: `${standIn}/turnstile`,
          CAPTCHA_TEST_TOKEN: testToken,
          // The test platform has a database, like a shared deployment: the test token is asked for twice.
          CAPTCHA_ALLOW_TEST_TOKEN: "true",
          CAPTCHA_ALLOW_IPS: "203.0.113.0/24",
          CAPTCHA_FAILURE_THRESHOLD: "3",
        },
        logLines,
      ));
    });

    afterEach(() => {
      siteverify.state = "up";
    });

    after(async () => {
      await expectNoSecretLeaked(db, logLines, secrets);
      await db.end();
      auth.close();
      await running.stop();
    });

    it("refuses SendOtp without a token with CAPTCHA_REQUIRED and the site key to render, through both doors, and sends nothing", async () => {
      const phone = newPhone();
      const { error } = await auth.call("sendOtp", { phoneNumber: phone }, from(newIp()));
      expect(error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(errorInfo(error)?.reason).to.equal("CAPTCHA_REQUIRED");
      expect(errorInfo(error)?.metadata).to.deep.equal({ provider: "turnstile", site_key: "site-key-for-the-widget" });

      const viaGateway = await connectCall(running.httpPort!, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: phone }, from(newIp()));
      expect(viaGateway.json.code).to.equal("failed_precondition");
      expect(viaGateway.json.details[0].debug).to.deep.include({ reason: "CAPTCHA_REQUIRED", metadata: { provider: "turnstile", site_key: "site-key-for-the-widget" } });
      expect(sms.countFor(phone)).to.equal(0);
    });

    it("sends the code when the provider accepts the token, asking it with the secret, the token and the caller's address", async () => {
      const phone = newPhone();
      const ip = newIp();
      const token = pass();
      const { error } = await auth.call("sendOtp", { phoneNumber: phone }, from(ip, token));
      expect(error).to.equal(undefined);
      expect(sms.countFor(phone)).to.equal(1);
      const asked = siteverify.received.at(-1)!;
      expect(asked.provider).to.equal("turnstile");
      expect(Object.fromEntries(asked.form)).to.deep.equal({ secret, response: token, remoteip: ip });

      const viaGateway = await connectCall(running.httpPort!, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: phone }, from(newIp(), pass()));
      expect(viaGateway.status).to.equal(200);
      expect(sms.countFor(phone)).to.equal(2);
    });

    it("lets a browser on an allowed origin send the x-captcha-token header (CORS preflight)", async () => {
      const preflight = await fetch(`http://127.0.0.1:${running.httpPort}/portcullis.v1.AuthService/SendOtp`, {
        method: "OPTIONS",
        headers: { origin: "https://app.example.com", "access-control-request-method": "POST", "access-control-request-headers": "content-type,x-captcha-token" },
      });
      expect(preflight.status).to.equal(204);
      expect(preflight.headers.get("access-control-allow-headers")?.toLowerCase()).to.contain("x-captcha-token");
    });

    it("refuses a token the provider rejects like a missing one", async () => {
      const phone = newPhone();
      const token = pass("forged-");
      const { error } = await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), token));
      expect(error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(errorInfo(error)?.reason).to.equal("CAPTCHA_REQUIRED");
      expect(error?.details).to.match(/not accepted/);
      expect(siteverify.tokensSeen()).to.include(token);
      expect(sms.countFor(phone)).to.equal(0);
    });

    it("fails closed for SendOtp (ALWAYS) when the provider is down or answers nonsense: UNAVAILABLE, nothing sent", async () => {
      const phone = newPhone();
      for (const state of ["down", "garbage"] as const) {
        siteverify.state = state;
        const { error } = await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), pass()));
        expect(error?.code, state).to.equal(grpc.status.UNAVAILABLE);
      }
      expect(sms.countFor(phone)).to.equal(0);
    });

    it("passes the test token without asking the provider", async () => {
      const phone = newPhone();
      const asked = siteverify.received.length;
      expect((await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), testToken))).error).to.equal(undefined);
      expect(sms.countFor(phone)).to.equal(1);
      expect(siteverify.received.length).to.equal(asked);
      expect(logLines.join(""), "said at start-up").to.contain("CAPTCHA_TEST_TOKEN is set");
    });

    it("asks no token of an address on CAPTCHA_ALLOW_IPS", async () => {
      const phone = newPhone();
      expect((await auth.call("sendOtp", { phoneNumber: phone }, from("203.0.113.9"))).error).to.equal(undefined);
      expect(sms.countFor(phone)).to.equal(1);
    });

    it("lets Login's first failures from an address through without a token, then asks that address (only) for one", async () => {
      const ip = newIp();
      for (let i = 0; i < 3; i++) {
        const { error } = await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip));
        expect(error?.code, `failure ${i + 1}`).to.equal(grpc.status.UNAUTHENTICATED);
      }
      const asked = await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip));
      expect(asked.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(errorInfo(asked.error)?.reason).to.equal("CAPTCHA_REQUIRED");

      const withToken = await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip, pass()));
      expect(withToken.error?.code, "the token passes; the password is still checked").to.equal(grpc.status.UNAUTHENTICATED);
      const viaGateway = await connectCall(running.httpPort!, "/portcullis.v1.AuthService/Login", { email: newEmail(), password: "wrong password", device: { deviceId: "d", deviceType: "DEVICE_TYPE_WEB", deviceName: "B" } }, from(ip));
      expect(viaGateway.json.details[0].debug.reason).to.equal("CAPTCHA_REQUIRED");

      const elsewhere = await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(newIp()));
      expect(elsewhere.error?.code, "another address is not asked").to.equal(grpc.status.UNAUTHENTICATED);
    });

    it("counts Login failures for one email from many addresses, and signs the owner in once a token is shown", async () => {
      const email = newEmail();
      const password = `correct horse ${randomUUID()}`;
      secrets.push(password);
      await registerVerified(running.grpcPort!, mail, email, password, { headers: from(newIp(), pass()) });
      for (let i = 0; i < 3; i++) {
        const { error } = await auth.call("login", { email, password: "wrong password", device }, from(newIp()));
        expect(error?.code, `failure ${i + 1}`).to.equal(grpc.status.UNAUTHENTICATED);
      }
      const spelledOtherwise = await auth.call("login", { email: ` ${email.toUpperCase()} `, password, device }, from(newIp()));
      expect(errorInfo(spelledOtherwise.error)?.reason, "a new address, the same person").to.equal("CAPTCHA_REQUIRED");

      const signedIn = await auth.call("login", { email, password, device }, from(newIp(), pass()));
      expect(signedIn.error).to.equal(undefined);
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);
    });

    it("counts wrong VerifyOtp codes for a phone number the same way", async () => {
      const phone = newPhone();
      for (let i = 0; i < 3; i++) {
        const { error } = await auth.call("verifyOtp", { phoneNumber: phone, code: "000000", device }, from(newIp()));
        expect(error?.code, `failure ${i + 1}`).to.equal(grpc.status.INVALID_ARGUMENT);
      }
      const { error } = await auth.call("verifyOtp", { phoneNumber: phone, code: "000000", device }, from(newIp()));
      expect(errorInfo(error)?.reason).to.equal("CAPTCHA_REQUIRED");
    });

    it("fails closed for Login past the threshold when the provider is down (CAPTCHA_FAIL_OPEN_AFTER_FAILURES unset)", async () => {
      const ip = newIp();
      for (let i = 0; i < 3; i++) await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip));
      siteverify.state = "down";
      const { error } = await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip, pass()));
      expect(error?.code).to.equal(grpc.status.UNAVAILABLE);
    });

    it("audits each kind of refusal as captcha.refused, without the token", async () => {
      await running.app!.settled();
      const { rows } = await db.query("select detail from audit_event where event = 'captcha.refused' order by event_time");
      const seen = new Set(rows.map((row) => `${row.detail.method} ${row.detail.cause}`));
      expect([...seen]).to.include.members([
        "/portcullis.v1.AuthService/SendOtp missing",
        "/portcullis.v1.AuthService/SendOtp rejected",
        "/portcullis.v1.AuthService/SendOtp unavailable",
        "/portcullis.v1.AuthService/Login missing",
        "/portcullis.v1.AuthService/Login unavailable",
      ]);
      expect(rows[0].detail.provider).to.equal("turnstile");
    });
  });

  describe("with hCaptcha, failing open for AFTER_FAILURES", () => {
    const logLines: string[] = [];
    let running: Running;
    let db: pg.Client;
    let auth: ReturnType<typeof grpcClient<typeof AuthService>>;

    before(async () => {
      ({ running, db, auth } = await platformWith(
        { CAPTCHA_PROVIDER: "hcaptcha", CAPTCHA_VERIFY_URL: `${standIn}/hcaptcha`, CAPTCHA_FAILURE_THRESHOLD: "1", CAPTCHA_FAIL_OPEN_AFTER_FAILURES: "true" },
        logLines,
      ));
    });

    afterEach(() => {
      siteverify.state = "up";
    });

    after(async () => {
      await expectNoSecretLeaked(db, logLines, secrets);
      await db.end();
      auth.close();
      await running.stop();
    });

    it("reads hCaptcha's answer: sent with a good token, refused with a bad one", async () => {
      const phone = newPhone();
      expect((await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), pass()))).error).to.equal(undefined);
      const refused = await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), pass("bot-")));
      expect(errorInfo(refused.error)?.metadata).to.deep.equal({ provider: "hcaptcha", site_key: "site-key-for-the-widget" });
      expect(siteverify.received.at(-1)!.provider).to.equal("hcaptcha");
      expect(sms.countFor(phone)).to.equal(1);
    });

    it("lets Login through past the threshold while the provider is down, but still wants a token; SendOtp (ALWAYS) stays closed", async () => {
      const ip = newIp();
      await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip));
      siteverify.state = "down";
      const withoutToken = await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip));
      expect(errorInfo(withoutToken.error)?.reason, "an outage does not excuse a missing token").to.equal("CAPTCHA_REQUIRED");
      const withToken = await auth.call("login", { email: newEmail(), password: "wrong password", device }, from(ip, pass()));
      expect(withToken.error?.code, "through to the password check").to.equal(grpc.status.UNAUTHENTICATED);

      const sent = await auth.call("sendOtp", { phoneNumber: newPhone() }, from(newIp(), pass()));
      expect(sent.error?.code).to.equal(grpc.status.UNAVAILABLE);
    });
  });

  describe("with reCAPTCHA v3", () => {
    const logLines: string[] = [];
    let running: Running;
    let db: pg.Client;
    let auth: ReturnType<typeof grpcClient<typeof AuthService>>;

    before(async () => {
      ({ running, db, auth } = await platformWith(
        { CAPTCHA_PROVIDER: "recaptcha", CAPTCHA_VERIFY_URL: `${standIn}/recaptcha`, CAPTCHA_MIN_SCORE: "0.5", CAPTCHA_EXPECTED_ACTION: "send_otp" },
        logLines,
      ));
    });

    after(async () => {
      await expectNoSecretLeaked(db, logLines, secrets);
      await db.end();
      auth.close();
      await running.stop();
    });

    it("passes a token scored at or above CAPTCHA_MIN_SCORE for the expected action, and refuses a low score, another action or a failure", async () => {
      const phone = newPhone();
      expect((await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), pass("pass:0.9:send_otp-")))).error).to.equal(undefined);
      expect((await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), pass("pass:0.5:send_otp-")))).error).to.equal(undefined);
      for (const prefix of ["pass:0.3:send_otp-", "pass:0.9:login-", "fail-"]) {
        const { error } = await auth.call("sendOtp", { phoneNumber: phone }, from(newIp(), pass(prefix)));
        expect(errorInfo(error)?.reason, prefix).to.equal("CAPTCHA_REQUIRED");
        expect(errorInfo(error)?.metadata.provider).to.equal("recaptcha");
      }
      expect(sms.countFor(phone)).to.equal(2);
    });
  });

  describe("failure windows on the embedded store", () => {
    it("counts failures per key until the window that began with the first one ends", async () => {
      let now = 0;
      const counter = new MemoryFailureCounter(() => now);
      await counter.add("a", 1000);
      now = 600;
      await counter.add("a", 1000);
      expect(await counter.count("a")).to.equal(2);
      expect(await counter.count("b")).to.equal(0);
      now = 1000;
      expect(await counter.count("a"), "the window began at 0").to.equal(0);
      await counter.add("a", 1000);
      expect(await counter.count("a")).to.equal(1);
    });
  });
});
