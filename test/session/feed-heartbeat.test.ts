import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import { Code } from "../../services/kernel/errors.js";
import { createLogger } from "../../services/platform/logger.js";
import { connectRedis, subscriberConnection, type RedisClient } from "../../services/platform/redis.js";
import { backlogEvents, RevocationFeed, type FeedChannel, type FeedOptions } from "../../services/session/feed.js";
import type { FeedEvent } from "../../services/session/revocations.js";
import { runId, testRedisUrl } from "../support/stores.js";
import { until } from "../support/until.js";
import { principal, refusal } from "../support/feed.js";

const logger = createLogger("silent");

const revoked = (sessionId: string): FeedEvent => ({ kind: "revoked", sessionIds: [sessionId], untilMs: Date.now() + 60_000 });

describe("Revocation feed: heartbeats and silence", () => {
  let redis: RedisClient;
  let channels = 0;
  let channel: FeedChannel;
  const started: RevocationFeed[] = [];

  /** Portcullis's side: beats on the channel. */
  async function publisher(): Promise<RevocationFeed> {
    const feed = new RevocationFeed(async () => [], logger, channel, { heartbeatIntervalMs: 100 });
    started.push(feed);
    await feed.start();
    return feed;
  }

  /** A guard's side: catches up from the backlog alone, and counts a silent channel as lost. */
  async function listener(options: FeedOptions = {}, log = logger): Promise<RevocationFeed> {
    const feed = new RevocationFeed(backlogEvents(channel), log, channel, { watchesSilence: true, ...options });
    started.push(feed);
    await feed.start();
    return feed;
  }

  /** Resolves at a heartbeat published after the call: every feed subscribed by then hears it too, and from then on watches for silence. */
  async function nextBeat(): Promise<void> {
    const subscriber = subscriberConnection(redis);
    try {
      const heard = new Promise<void>((resolve) =>
        subscriber.on("message", (_channel: string, message: string) => JSON.parse(message).kind === "heartbeat" && resolve()),
      );
      await subscriber.connect();
      await subscriber.subscribe(channel.channel);
      await heard;
    } finally {
      subscriber.disconnect();
    }
  }

  before(async () => {
    redis = await connectRedis(testRedisUrl, false);
  });
  beforeEach(() => {
    const name = `test:${runId}:heartbeat-${channels++}`;
    channel = { client: redis, channel: name, backlog: `${name}:backlog` };
  });
  afterEach(async () => {
    await Promise.all(started.splice(0).map((feed) => feed.stop()));
  });
  after(() => redis.disconnect());

  it("refuses user calls once nothing has been heard past the timeout, and catches up on what it missed when heartbeats resume", async () => {
    const portcullis = await publisher();
    // Beats every 100 ms, but a pause of the loaded test process must not pass for silence.
    const guard = await listener({ silenceTimeoutMs: 2000 });
    await nextBeat();
    expect(refusal(guard), "live while Portcullis beats").to.equal(undefined);

    await portcullis.stop();
    await until(() => refusal(guard) === Code.Unavailable);

    // A revocation whose message never reached the guard: only the backlog has it.
    const lost = revoked("session-1");
    await redis.zadd(channel.backlog, lost.untilMs, JSON.stringify(lost));
    await publisher();
    await until(() => refusal(guard) !== Code.Unavailable);
    expect(refusal(guard), "caught up before serving again").to.equal(Code.Unauthenticated);
    expect(refusal(guard, principal({ sessionId: "session-2" })), "other sessions served").to.equal(undefined);
  });

  it("keeps heartbeats out of the backlog", async () => {
    await publisher();
    const guard = await listener();
    const heard = revoked("session-9");
    await redis.publish(channel.channel, JSON.stringify(heard));
    await until(() => refusal(guard, principal({ sessionId: "session-9" })) === Code.Unauthenticated);
    expect(await redis.zcard(channel.backlog)).to.equal(0);
  });

  it("ignores kinds of message it does not know, as from a newer Portcullis", async () => {
    await publisher();
    const guard = await listener();
    const nowMs = Date.now();
    const future = { kind: "kyc_reviewed", userId: "user-1", level: 0, sinceMs: nowMs, untilMs: nowMs + 60_000 };
    await redis.publish(channel.channel, JSON.stringify(future));
    // Messages arrive in order: once this one is applied, the one before has been read.
    await redis.publish(channel.channel, JSON.stringify(revoked("marker")));
    await until(() => refusal(guard, principal({ sessionId: "marker" })) === Code.Unauthenticated);
    expect(guard.check(principal({ issuedAt: Math.floor(nowMs / 1000) - 60 })).kycLevel).to.equal(2);
  });

  it("leaves a feed that does not watch for silence live once the heartbeats stop", async () => {
    const portcullis = await publisher();
    const quiet = new RevocationFeed(backlogEvents(channel), logger, channel);
    started.push(quiet);
    await quiet.start();
    const guard = await listener();
    await nextBeat();
    await portcullis.stop();
    await until(() => refusal(guard) === Code.Unavailable);
    expect(refusal(quiet), "Portcullis instances poll Postgres instead").to.equal(undefined);
  });

  it("times the silence by three of the intervals the heartbeats announce, unless told a timeout", async () => {
    const portcullis = await publisher();
    const announced = await listener();
    const overridden = await listener({ silenceTimeoutMs: 60_000 });
    await nextBeat();
    await portcullis.stop();
    await until(() => refusal(announced) === Code.Unavailable);
    expect(refusal(overridden), "a minute of silence allowed").to.equal(undefined);
  });

  it("times the silence by the slowest interval announced while instances beat at different ones, as during a rolling change of the setting", async () => {
    const guard = await listener();
    // An instance still on a slower setting, beating once a second.
    await redis.publish(channel.channel, JSON.stringify({ kind: "heartbeat", intervalMs: 1000 }));
    const faster = await publisher();
    await nextBeat();
    await faster.stop();
    await sleep(600);
    expect(refusal(guard), "twice the faster instance's timeout later").to.equal(undefined);
    await until(() => refusal(guard) === Code.Unavailable);
  });

  it("stays live on a channel that has never carried a heartbeat, as from a Portcullis older than heartbeats, and watches from the first", async () => {
    const lines: string[] = [];
    const log = createLogger("info", new Writable({ write(chunk, _encoding, done) { lines.push(String(chunk)); done(); } }));
    const guard = await listener({ silenceTimeoutMs: 200 }, log);
    expect(lines.filter((line) => line.includes("no heartbeat yet")), "warned once, at start-up").to.have.length(1);

    // An older Portcullis publishes changes, and nothing else.
    await redis.publish(channel.channel, JSON.stringify(revoked("session-old")));
    await until(() => refusal(guard, principal({ sessionId: "session-old" })) === Code.Unauthenticated);
    await sleep(1000);
    expect(refusal(guard), "live long past the timeout").to.equal(undefined);

    // Upgraded, it beats once, then falls silent.
    await redis.publish(channel.channel, JSON.stringify({ kind: "heartbeat", intervalMs: 100 }));
    await until(() => refusal(guard) === Code.Unavailable);
    expect(lines.filter((line) => line.includes("heartbeat heard")), "told when the first arrived").to.have.length(1);
    expect(lines.filter((line) => line.includes("no heartbeat yet")), "and never warned again").to.have.length(1);
  });
});
