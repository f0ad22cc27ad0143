import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import { Code } from "../../services/kernel/errors.js";
import { createLogger } from "../../services/platform/logger.js";
import { connectRedis, type RedisClient } from "../../services/platform/redis.js";
import { RevocationFeed } from "../../services/session/feed.js";
import { kycCapMarginMs, mayPredateLowering, type FeedEvent } from "../../services/session/revocations.js";
import { freePort, RedisServer } from "../support/redis-servers.js";
import { runId, testRedisUrl } from "../support/stores.js";
import { until } from "../support/until.js";
import { principal, refusal } from "../support/feed.js";

const logger = createLogger("silent");
const lifetimeMs = 905_000;

const revoked = (sessionId: string): FeedEvent => ({ kind: "revoked", sessionIds: [sessionId], untilMs: Date.now() + lifetimeMs });

let channels = 0;
const feedChannel = (client: RedisClient) => {
  const name = `test:${runId}:feed-${channels++}`;
  return { client, channel: name, backlog: `${name}:backlog` };
};

describe("KYC downgrades and tokens refreshed around them", () => {
  const marginMs = kycCapMarginMs(5);
  const sinceMs = 1_700_000_000_000;
  const sinceSeconds = sinceMs / 1000;

  it("treats as older than the lowering a token signed a little after the lowering's transaction began", () => {
    expect(mayPredateLowering(sinceSeconds - 60, sinceMs, marginMs), "issued before").to.equal(true);
    expect(mayPredateLowering(sinceSeconds, sinceMs, marginMs), "same second").to.equal(true);
    // Read the old level before the lowering committed, signed 3 s after it began, on a clock 5 s ahead.
    expect(mayPredateLowering(sinceSeconds + 8, sinceMs, marginMs), "the race, plus skew").to.equal(true);
    expect(mayPredateLowering(sinceSeconds + marginMs / 1000, sinceMs, marginMs), "the margin's end").to.equal(true);
    expect(mayPredateLowering(sinceSeconds + marginMs / 1000 + 1, sinceMs, marginMs), "after the margin").to.equal(false);
    expect(kycCapMarginMs(30) - kycCapMarginMs(5), "a wider clock tolerance widens it as much").to.equal(25_000);
  });

  it("caps only a level above the new one, and leaves tokens from well after the lowering alone", async () => {
    const feed = new RevocationFeed(async () => [], logger);
    await feed.start();
    const nowMs = Date.now();
    await feed.publish({ kind: "kyc_lowered", userId: "user-1", level: 1, sinceMs: nowMs, untilMs: nowMs + lifetimeMs });
    const issued = Math.floor(nowMs / 1000);
    expect(feed.check(principal({ kycLevel: 2, issuedAt: issued - 60 })).kycLevel, "issued before").to.equal(1);
    expect(feed.check(principal({ kycLevel: 2, issuedAt: issued + 3 })).kycLevel, "signed after the lowering began").to.equal(1);
    const atNewLevel = principal({ kycLevel: 1, issuedAt: issued + 3 });
    expect(feed.check(atNewLevel), "already at the new level").to.equal(atNewLevel);
    const reapproved = principal({ kycLevel: 2, issuedAt: issued + 60 });
    expect(feed.check(reapproved), "approved again since").to.equal(reapproved);
    expect(feed.check(principal({ subject: "user-2", issuedAt: issued - 60 })).kycLevel, "another user").to.equal(2);
    await feed.stop();
  });

  it("keeps the lowered level when the same lowering is read again after a new approval", async () => {
    const feed = new RevocationFeed(async () => [], logger);
    await feed.start();
    const nowMs = Date.now();
    await feed.publish({ kind: "kyc_lowered", userId: "user-1", level: 0, sinceMs: nowMs, untilMs: nowMs + lifetimeMs });
    await feed.publish({ kind: "kyc_lowered", userId: "user-1", level: 1, sinceMs: nowMs, untilMs: nowMs + lifetimeMs });
    expect(feed.check(principal({ kycLevel: 2, issuedAt: Math.floor(nowMs / 1000) - 60 })).kycLevel).to.equal(0);
    await feed.stop();
  });
});

describe("Permissions taken away and tokens issued before", () => {
  const lowered = (permissions: string[], sinceMs: number): FeedEvent => ({
    kind: "permissions_lowered",
    userId: "user-1",
    permissions,
    sinceMs,
    untilMs: sinceMs + lifetimeMs,
  });

  it("keeps only the permissions still held in tokens issued before the change, and leaves later tokens and other users alone", async () => {
    const feed = new RevocationFeed(async () => [], logger);
    await feed.start();
    const nowMs = Date.now();
    const issued = Math.floor(nowMs / 1000);
    await feed.publish(lowered(["audit.read"], nowMs));
    const before = feed.check(principal({ permissions: ["kyc.review", "audit.read"], issuedAt: issued - 60 }));
    expect(before.permissions, "issued before").to.deep.equal(["audit.read"]);
    expect(before.kycLevel, "nothing else changes").to.equal(2);
    expect(feed.check(principal({ permissions: ["kyc.review"], issuedAt: issued + 3 })).permissions, "signed as the change began").to.deep.equal([]);
    const holding = principal({ permissions: ["audit.read"], issuedAt: issued - 60 });
    expect(feed.check(holding), "nothing to take away").to.equal(holding);
    const refreshed = principal({ permissions: ["kyc.review"], issuedAt: issued + 60 });
    expect(feed.check(refreshed), "granted again since, and refreshed").to.equal(refreshed);
    expect(feed.check(principal({ subject: "user-2", permissions: ["kyc.review"], issuedAt: issued - 60 })).permissions, "another user").to.deep.equal(["kyc.review"]);
    await feed.stop();
  });

  it("caps the KYC level and the permissions of one token together", async () => {
    const feed = new RevocationFeed(async () => [], logger);
    await feed.start();
    const nowMs = Date.now();
    await feed.publish({ kind: "kyc_lowered", userId: "user-1", level: 0, sinceMs: nowMs, untilMs: nowMs + lifetimeMs });
    await feed.publish(lowered([], nowMs));
    const checked = feed.check(principal({ kycLevel: 2, permissions: ["kyc.review"], issuedAt: Math.floor(nowMs / 1000) - 60 }));
    expect({ kycLevel: checked.kycLevel, permissions: checked.permissions }).to.deep.equal({ kycLevel: 0, permissions: [] });
    await feed.stop();
  });

  it("keeps a permission taken away when the same change is read again after a new grant, and lets a later change stand", async () => {
    const feed = new RevocationFeed(async () => [], logger);
    await feed.start();
    const nowMs = Date.now();
    const old = principal({ permissions: ["kyc.review", "audit.read", "session.admin"], issuedAt: Math.floor(nowMs / 1000) - 60 });
    await feed.publish(lowered(["audit.read", "session.admin"], nowMs));
    // A poll re-reads the row after kyc.review was granted back: the token, issued before, must not regain it.
    await feed.publish(lowered(["kyc.review", "audit.read", "session.admin"], nowMs));
    expect(feed.check(old).permissions).to.deep.equal(["audit.read", "session.admin"]);
    await feed.publish(lowered(["audit.read"], nowMs - 1000));
    expect(feed.check(old).permissions, "an older change read late changes nothing").to.deep.equal(["audit.read", "session.admin"]);
    await feed.publish(lowered(["kyc.review", "audit.read"], nowMs + 1000));
    expect(feed.check(old).permissions, "a later change is the truth as of then").to.deep.equal(["kyc.review", "audit.read"]);
    await feed.stop();
  });
});

describe("Revocation feed: re-reading Postgres every second", () => {
  it("applies what a read finds, keeps serving through a failed read, reaches back past it, and stops when stopped", async () => {
    const windows: number[] = [];
    const feed = new RevocationFeed(async () => [], logger, undefined, {
      poll: async (windowMs) => {
        windows.push(windowMs);
        if (windows.length === 1) throw new Error("Postgres blip");
        return [revoked("lost-publish")];
      },
    });
    await feed.start();
    await until(() => windows.length >= 1);
    expect(refusal(feed, principal()), "a failed read does not close the feed").to.equal(undefined);
    await until(() => refusal(feed, principal({ sessionId: "lost-publish" })) === Code.Unauthenticated);
    expect(windows[0], "reads overlap the previous one").to.be.at.least(10_000);
    expect(windows[1], "the read after a failure reaches back past it").to.be.greaterThan(windows[0]!);
    expect(refusal(feed, principal())).to.equal(undefined);

    await feed.stop();
    const reads = windows.length;
    await sleep(1500);
    expect(windows.length, "no read after stop").to.equal(reads);
  });
});

describe("Revocation feed: catching up", () => {
  let redis: RedisClient;
  before(async () => {
    redis = await connectRedis(testRedisUrl, false);
  });
  after(() => redis.disconnect());

  it("retries a failed catch-up until it succeeds, refusing user calls meanwhile, with no Redis reconnection", async () => {
    let reads = 0;
    const feed = new RevocationFeed(
      async () => {
        if (++reads <= 2) throw new Error("Postgres blip");
        return [revoked("revoked-earlier")];
      },
      logger,
      feedChannel(redis),
    );
    const started = feed.start();
    try {
      await until(() => reads >= 1);
      expect(refusal(feed, principal()), "fails closed until caught up").to.equal(Code.Unavailable);
      await started;
      expect(reads).to.equal(3);
      expect(refusal(feed, principal())).to.equal(undefined);
      expect(refusal(feed, principal({ sessionId: "revoked-earlier" }))).to.equal(Code.Unauthenticated);
    } finally {
      await feed.stop();
    }
  });

  it("stops retrying when stopped", async () => {
    let reads = 0;
    const feed = new RevocationFeed(
      async () => {
        reads++;
        throw new Error("Postgres down");
      },
      logger,
      feedChannel(redis),
    );
    const started = feed.start();
    await until(() => reads >= 2);
    await feed.stop();
    await started;
    const after = reads;
    await sleep(2500);
    expect(reads).to.equal(after);
  });
});

describe("Revocation feed: publishing while Redis is away", () => {
  it("says whether the publishes it is still retrying have landed", async () => {
    const server = new RedisServer(await freePort());
    await server.start();
    const client = await connectRedis(server.url, false);
    const feed = new RevocationFeed(async () => [], logger, feedChannel(client));
    try {
      expect(await feed.delivered(100), "nothing pending").to.equal(true);
      await server.stop();
      await feed.publish(revoked("while-down"));
      expect(await feed.delivered(200)).to.equal(false);
      await server.start();
      expect(await feed.delivered(10_000)).to.equal(true);
    } finally {
      await feed.stop();
      client.disconnect();
      await server.destroy();
    }
  });
});
