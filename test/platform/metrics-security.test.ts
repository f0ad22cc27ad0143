import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { createLogger } from "../../services/platform/logger.js";
import { metricsRegistry } from "../../services/platform/metrics.js";
import { connectRedis, type RedisClient } from "../../services/platform/redis.js";
import { RevocationFeed } from "../../services/session/feed.js";
import type { FeedEvent } from "../../services/session/revocations.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { MailInbox } from "../support/mail-inbox.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { runId, testRedisUrl } from "../support/stores.js";
import { platformForSuite } from "../support/suite-platform.js";
import { until } from "../support/until.js";

type Labels = Record<string, string>;

/** Every sample of every series, keyed by name and labels; histograms by their `_count`. */
async function samples(): Promise<Map<string, number>> {
  const all = new Map<string, number>();
  for (const metric of await metricsRegistry.getMetricsAsJSON()) {
    for (const sample of metric.values) {
      const name = (sample as { metricName?: string }).metricName ?? metric.name;
      all.set(key(name, sample.labels as Labels), sample.value);
    }
  }
  return all;
}

const key = (name: string, labels: Labels) =>
  `${name}{${Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(",")}}`;

const device = { deviceId: "metrics-device", deviceType: DeviceType.ANDROID, deviceName: "Metrics phone" };
const password = "a passphrase for metrics";

/**
 * Drives one instance through the security journeys and checks each moved its
 * series by exactly what it did. Other tests in the process add to the same
 * registry, so only differences over this test's own calls are compared.
 */
describe("Security and feed metrics", () => {
  const inbox = new SmsInbox();
  const mail = new MailInbox();
  const platform = platformForSuite({
    inboxes: [inbox, mail],
    env: {
      RATE_LIMITS: "otp_send_ip=1000/3600,otp_verify_ip=1000/3600,refresh_ip=1000/60,refresh_user=1000/60,login_ip=1000/900,login_email=1000/900,register_ip=1000/3600",
      REFRESH_REUSE_INTERVAL: "5",
      OTP_FAILURE_BUDGET: "2",
      PASSWORD_LOCKOUT_THRESHOLD: "2",
      PASSWORD_LOCKOUT_ACCOUNT_THRESHOLD: "2",
    },
  });
  const auth = platform.client(AuthService);
  let baseline: Map<string, number>;
  let reached: Map<string, number>;

  const moved = (name: string, labels: Labels = {}) => (reached.get(key(name, labels)) ?? 0) - (baseline.get(key(name, labels)) ?? 0);

  const login = (email: string, pass: string) => auth.call("login", { email, password: pass, device });

  const verify = (phone: string, code: string) => auth.call("verifyOtp", { phoneNumber: phone, code, device });

  before(async function () {
    this.timeout(60_000);
    baseline = await samples();

    const signedIn = await signInByPhone(platform.running.grpcPort!, inbox, newPhone());

    // The provider failing.
    inbox.failing = true;
    expect((await auth.call("sendOtp", { phoneNumber: newPhone() })).error?.code).to.equal(grpc.status.UNAVAILABLE);
    inbox.failing = false;

    // Asking again at once meets the resend cooldown; two wrong codes spend the phone's failure budget: locked, then refused.
    const guessed = newPhone();
    expect((await auth.call("sendOtp", { phoneNumber: guessed })).error).to.equal(undefined);
    expect((await auth.call("sendOtp", { phoneNumber: guessed })).error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    const wrong = inbox.codeFor(guessed) === "000000" ? "111111" : "000000";
    for (let i = 0; i < 2; i++) expect((await verify(guessed, wrong)).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect((await verify(guessed, inbox.codeFor(guessed))).error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    // A number that was sent nothing.
    expect((await verify(newPhone(), "123456")).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);

    // Refresh: a rotation, a retry of the same token, the successor used, then the first token again: reuse.
    const original = signedIn!.tokens!.refreshToken;
    const first = await auth.call("refreshToken", { refreshToken: original });
    expect(first.error).to.equal(undefined);
    expect((await auth.call("refreshToken", { refreshToken: original })).error).to.equal(undefined);
    expect((await auth.call("refreshToken", { refreshToken: first.response!.tokens!.refreshToken })).error).to.equal(undefined);
    expect((await auth.call("refreshToken", { refreshToken: original })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    const tampered = `${original.slice(0, -2)}${original.endsWith("AA") ? "BB" : "AA"}`;
    expect((await auth.call("refreshToken", { refreshToken: tampered })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);

    // A second phone session signed out; its refresh token then meets a revoked session.
    const other = await signInByPhone(platform.running.grpcPort!, inbox, newPhone());
    expect((await auth.call("logout", {}, bearer(other!.tokens!.accessToken))).error).to.equal(undefined);
    expect((await auth.call("refreshToken", { refreshToken: other!.tokens!.refreshToken })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);

    // Password: register, a right login before the address is confirmed, one after, two wrong ones (both locks begin),
    // then the right one meets the lock.
    const email = `metrics.${Date.now()}@example.com`;
    expect((await auth.call("register", { email, password, device })).error).to.equal(undefined);
    expect((await login(email, password)).error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    expect((await auth.call("verifyEmail", { email, code: mail.codeFor(email) })).error).to.equal(undefined);
    expect((await login(email, password)).error).to.equal(undefined);
    for (let i = 0; i < 2; i++) expect((await login(email, "not the passphrase")).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect((await login(email, password)).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect((await login(`nobody.${Date.now()}@example.com`, password)).error?.code).to.equal(grpc.status.UNAUTHENTICATED);

    reached = await samples();
  });

  it("counts sign-ins by method and outcome", () => {
    expect(moved("portcullis_sign_ins_total", { method: "otp", outcome: "success" })).to.equal(2);
    expect(moved("portcullis_sign_ins_total", { method: "otp", outcome: "wrong_secret" })).to.equal(2);
    expect(moved("portcullis_sign_ins_total", { method: "otp", outcome: "locked" })).to.equal(1);
    expect(moved("portcullis_sign_ins_total", { method: "otp", outcome: "no_code" })).to.equal(1);
    expect(moved("portcullis_sign_ins_total", { method: "pwd", outcome: "registered" })).to.equal(1);
    expect(moved("portcullis_sign_ins_total", { method: "pwd", outcome: "email_not_verified" })).to.equal(1);
    expect(moved("portcullis_sign_ins_total", { method: "pwd", outcome: "success" })).to.equal(1);
    expect(moved("portcullis_sign_ins_total", { method: "pwd", outcome: "wrong_secret" })).to.equal(2);
    expect(moved("portcullis_sign_ins_total", { method: "pwd", outcome: "locked" })).to.equal(1);
    expect(moved("portcullis_sign_ins_total", { method: "pwd", outcome: "unknown_account" })).to.equal(1);
  });

  it("counts code sends by country and outcome, and times the SMS provider", () => {
    // The test numbers, +44 7911 1…, are Guernsey's to libphonenumber.
    expect(moved("portcullis_otp_sends_total", { country: "GG", outcome: "sent" })).to.equal(3);
    expect(moved("portcullis_otp_sends_total", { country: "GG", outcome: "cooldown" })).to.equal(1);
    expect(moved("portcullis_otp_sends_total", { country: "GG", outcome: "provider_failed" })).to.equal(1);
    expect(moved("portcullis_message_delivery_seconds_count", { channel: "sms", provider: "webhook", outcome: "ok" })).to.equal(3);
    expect(moved("portcullis_message_delivery_seconds_count", { channel: "sms", provider: "webhook", outcome: "failed" })).to.equal(1);
  });

  it("counts the lockouts begun, by kind", () => {
    expect(moved("portcullis_lockouts_total", { kind: "otp_phone" })).to.equal(1);
    expect(moved("portcullis_lockouts_total", { kind: "password_source" })).to.equal(1);
    expect(moved("portcullis_lockouts_total", { kind: "password_account" })).to.equal(1);
  });

  it("counts refresh-token presentations by outcome", () => {
    expect(moved("portcullis_refreshes_total", { outcome: "rotated" })).to.equal(2);
    expect(moved("portcullis_refreshes_total", { outcome: "retry" })).to.equal(1);
    expect(moved("portcullis_refreshes_total", { outcome: "reuse_detected" })).to.equal(1);
    expect(moved("portcullis_refreshes_total", { outcome: "invalid" })).to.equal(1);
    expect(moved("portcullis_refreshes_total", { outcome: "revoked" })).to.equal(1);
  });

  it("counts the revocations published, each applied here at once and not again when pub/sub or a poll brings it back", () => {
    // The reuse detection and the logout.
    expect(moved("portcullis_revocations_published_total", { kind: "revoked" })).to.equal(2);
    expect(moved("portcullis_revocations_applied_total", { kind: "revoked", source: "local" })).to.equal(2);
    expect(moved("portcullis_revocations_applied_total", { kind: "revoked", source: "pubsub" }), "already known here").to.equal(0);
    expect(moved("portcullis_revocations_applied_total", { kind: "revoked", source: "poll" }), "already known here").to.equal(0);
  });

  it("times the publish-to-arrival lag of what pub/sub delivers", async () => {
    // The instance hears its own messages; wait for them rather than race them.
    const deadline = Date.now() + 5000;
    while (moved("portcullis_revocation_feed_lag_seconds_count") < 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      reached = await samples();
    }
    expect(moved("portcullis_revocation_feed_lag_seconds_count")).to.equal(2);
  });

  it("reports the feed live and the key ring's signing key and published keys", async () => {
    const current = await samples();
    expect(current.get(key("portcullis_revocation_feed_connected", {}))).to.equal(1);
    expect(current.get(key("portcullis_signing_key_age_seconds", {}))).to.be.greaterThan(0);
    expect(current.get(key("portcullis_signing_keys_published", {}))).to.be.at.least(1);
  });
});

describe("Revocation feed metrics, feed by feed", () => {
  const logger = createLogger("silent");
  const untilMs = Date.now() + 900_000;
  const revoked = (...sessionIds: string[]): FeedEvent => ({ kind: "revoked", sessionIds, untilMs });
  let redis: RedisClient;
  let baseline: Map<string, number>;
  const moved = async (name: string, labels: Labels = {}) => ((await samples()).get(key(name, labels)) ?? 0) - (baseline.get(key(name, labels)) ?? 0);
  const connected = async () => (await samples()).get(key("portcullis_revocation_feed_connected", {}));

  before(async () => {
    redis = await connectRedis(testRedisUrl, false);
  });
  after(() => redis.disconnect());

  it("counts each change once, by the source that brought it first, and times only stamped messages", async () => {
    const name = `test:${runId}:metrics-feed`;
    const channel = { client: redis, channel: name, backlog: `${name}:backlog` };
    baseline = await samples();
    const publisher = new RevocationFeed(async () => [], logger, channel);
    let readPostgres!: () => void;
    const caughtUp = new Promise<void>((resolve) => (readPostgres = resolve));
    // The poll finds nothing until pub/sub has brought its messages, so a slow delivery cannot let it take "published" first.
    let polled: FeedEvent[] = [];
    const listener = new RevocationFeed(async () => (await caughtUp, [revoked("caught-up")]), logger, channel, { poll: async () => polled });
    await publisher.start();
    const starting = listener.start();
    expect(await connected(), "0 while one feed is still catching up").to.equal(0);
    readPostgres();
    await starting;
    try {
      expect(await connected()).to.equal(1);
      await publisher.publish(revoked("published", "published-too"));
      await publisher.publish({ kind: "kyc_lowered", userId: "user-1", level: 0, sinceMs: Date.now(), untilMs });
      await listener.publish(revoked("caught-up"));
      // A message from a publisher that did not stamp it yet.
      await redis.publish(channel.channel, JSON.stringify(revoked("unstamped")));
      await until(async () => (await moved("portcullis_revocations_applied_total", { kind: "revoked", source: "pubsub" })) >= 5);
      polled = [revoked("polled", "published")];
      await until(async () => (await moved("portcullis_revocations_applied_total", { kind: "revoked", source: "poll" })) >= 1);

      expect(await moved("portcullis_revocations_published_total", { kind: "revoked" }), "one per session").to.equal(3);
      expect(await moved("portcullis_revocations_published_total", { kind: "kyc_lowered" })).to.equal(1);
      expect(await moved("portcullis_revocations_applied_total", { kind: "revoked", source: "local" }), "the publisher's two; the listener knew its one").to.equal(2);
      expect(await moved("portcullis_revocations_applied_total", { kind: "kyc_lowered", source: "local" })).to.equal(1);
      expect(await moved("portcullis_revocations_applied_total", { kind: "revoked", source: "catch_up" })).to.equal(1);
      expect(
        await moved("portcullis_revocations_applied_total", { kind: "revoked", source: "pubsub" }),
        "the publisher's two to the listener, the listener's one to the publisher, the unstamped one to both",
      ).to.equal(5);
      expect(await moved("portcullis_revocations_applied_total", { kind: "kyc_lowered", source: "pubsub" })).to.equal(1);
      expect(await moved("portcullis_revocations_applied_total", { kind: "revoked", source: "poll" }), "only what pub/sub had not brought").to.equal(1);
      // Both feeds hear the three stamped messages; nobody times the unstamped one.
      await until(async () => (await moved("portcullis_revocation_feed_lag_seconds_count")) >= 6);
      expect(await moved("portcullis_revocation_feed_lag_seconds_count")).to.equal(6);
    } finally {
      await listener.stop();
      await publisher.stop();
    }
  });
});
