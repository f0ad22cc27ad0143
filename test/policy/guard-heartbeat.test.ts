import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { decodeJwt } from "jose";
import { createGrpcServer, createGuard, type Guard, type GuardOptions, type UnaryHandler } from "../../services/guard/guard.js";
import { sessionFeedKeys } from "../../services/platform/config.js";
import { createLogger } from "../../services/platform/logger.js";
import { connectRedis, type RedisClient } from "../../services/platform/redis.js";
import type { Running } from "../../services/app/servers.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { grpcClient } from "../support/clients.js";
import { mintUserToken, sharedStores, startPlatform, type SharedStores } from "../support/platform.js";
import { bearer } from "../support/sign-in.js";
import { dropTestDatabases } from "../support/stores.js";
import { platformForSuite } from "../support/suite-platform.js";

/** Not Portcullis's default (5 s, so 15 s of silence): guards must time the feed by the interval Portcullis announces. */
const heartbeatSeconds = 1;
const silenceTimeoutMs = 3 * heartbeatSeconds * 1000;

type KycClient = ReturnType<typeof grpcClient<typeof KycService>>;

/** A service named orders behind a guard with `options`, serving GetKycStatus. */
async function serveBehind(options: Omit<GuardOptions, "name" | "services">): Promise<{ client: KycClient; close(): Promise<void> }> {
  const guard: Guard = await createGuard({ name: "orders", services: [KycService], ...options });
  const status: UnaryHandler = async () => ({});
  const { server } = createGrpcServer({
    services: [KycService],
    dispatch: guard.dispatch(new Map([[KycService.method.getKycStatus, status]])),
    maxRequestBytes: 65536,
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, bound) => (e ? reject(e) : resolve(bound))),
  );
  const client = grpcClient(KycService, port);
  return {
    client,
    async close() {
      client.close();
      server.forceShutdown();
      await guard.close();
    },
  };
}

/** The first answer that `wanted` accepts, calling again until then. */
async function answerWhen(client: KycClient, token: string, wanted: (error: grpc.ServiceError | undefined) => boolean, ms = 4 * silenceTimeoutMs) {
  const deadline = Date.now() + ms;
  for (;;) {
    const { error } = await client.call("getKycStatus", {}, bearer(token));
    if (wanted(error)) return error;
    if (Date.now() > deadline) throw new Error(`no such answer in ${ms} ms; last: ${error?.details ?? "served"}`);
    await sleep(50);
  }
}

/** Calls for `ms`, each one served. */
async function servedFor(client: KycClient, token: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    expect((await client.call("getKycStatus", {}, bearer(token))).error).to.equal(undefined);
    await sleep(100);
  }
}

/**
 * A guard has no Postgres to fall back on: a feed that stops hearing from
 * Portcullis may be missing revocations, so it stops vouching for sessions.
 */
describe("The guard when Portcullis's feed falls silent", () => {
  let stores: SharedStores;
  let portcullis: Running;
  let guarded: Awaited<ReturnType<typeof serveBehind>>;

  before(async () => {
    stores = await sharedStores();
    portcullis = await startPlatform({ ...stores, FEED_HEARTBEAT_SECONDS: String(heartbeatSeconds) });
    guarded = await serveBehind({
      jwksUrl: `http://127.0.0.1:${portcullis.httpPort}/.well-known/jwks.json`,
      redisUrl: stores.REDIS_URL,
      portcullisKeyPrefix: stores.REDIS_KEY_PREFIX,
      limitKeyPrefix: `${stores.REDIS_KEY_PREFIX}downstream:`,
      logger: createLogger("silent"),
    });
  });
  after(async () => {
    await guarded.close();
    await portcullis.stop();
    await dropTestDatabases();
  });

  it("stays live while Portcullis beats, refuses user calls after three of the intervals it announces in silence, and serves again once it is back", async () => {
    const { token } = await mintUserToken(portcullis, { audience: "orders" });
    const { client } = guarded;

    // Longer than the timeout, with nothing on the feed but heartbeats.
    await servedFor(client, token, silenceTimeoutMs + 1000);

    await portcullis.stop();
    const refused = await answerWhen(client, token, (error) => error !== undefined);
    expect(refused?.code).to.equal(grpc.status.UNAVAILABLE);
    expect(refused?.details).to.contain("revocations cannot be confirmed");

    portcullis = await startPlatform({ ...stores, FEED_HEARTBEAT_SECONDS: String(heartbeatSeconds) });
    expect(await answerWhen(client, token, (error) => error === undefined)).to.equal(undefined);
  });

  it("refuses a timeout that is not a positive number of milliseconds, before connecting to anything", async () => {
    for (const feedHeartbeatTimeoutMs of [0, -1, Number.NaN]) {
      const starting = serveBehind({
        jwksUrl: `http://127.0.0.1:${portcullis.httpPort}/.well-known/jwks.json`,
        redisUrl: "redis://unreachable.invalid:1",
        feedHeartbeatTimeoutMs,
      });
      const error = await starting.then(() => undefined, (e: Error) => e);
      expect(error?.message, String(feedHeartbeatTimeoutMs)).to.match(/^feedHeartbeatTimeoutMs:/);
    }
  });
});

/**
 * Guards are upgraded before Portcullis (an older guard misreads the newer
 * events), and an older Portcullis never beats: a guard must not take that
 * for silence, or the upgrade is an outage.
 */
describe("The guard beside a Portcullis older than heartbeats", () => {
  const timeoutMs = 1000;
  const lines: string[] = [];
  let redis: RedisClient;
  let olderFeed: { channel: string };
  let guarded: Awaited<ReturnType<typeof serveBehind>>;

  // Registered before the platform's own after hook, so the guard closes first, as Portcullis still runs.
  after(async () => {
    await guarded?.close();
    redis?.disconnect();
  });
  // Serves the JWKS; the guard listens on a channel of its own, where only this test publishes, as an older Portcullis would.
  const platform = platformForSuite();

  before(async () => {
    redis = await connectRedis(platform.stores.REDIS_URL, false);
    const olderPrefix = `${platform.stores.REDIS_KEY_PREFIX}older:`;
    olderFeed = sessionFeedKeys(olderPrefix);
    guarded = await serveBehind({
      jwksUrl: `http://127.0.0.1:${platform.running.httpPort}/.well-known/jwks.json`,
      redisUrl: platform.stores.REDIS_URL,
      portcullisKeyPrefix: olderPrefix,
      limitKeyPrefix: `${platform.stores.REDIS_KEY_PREFIX}downstream:`,
      feedHeartbeatTimeoutMs: timeoutMs,
      logger: createLogger("info", new Writable({ write(chunk, _encoding, done) { lines.push(String(chunk)); done(); } })),
    });
  });

  it("serves long past its timeout and hears the revocations, warning once that it cannot detect silence, until a first heartbeat starts the watch", async () => {
    const { client } = guarded;
    const first = await mintUserToken(platform.running, { audience: "orders" });
    expect(lines.filter((line) => line.includes("no heartbeat yet")), "warned at start-up").to.have.length(1);

    await servedFor(client, first.token, 3 * timeoutMs);
    const revocation = { kind: "revoked", sessionIds: [decodeJwt(first.token).sid], untilMs: Date.now() + 60_000 };
    await redis.publish(olderFeed.channel, JSON.stringify(revocation));
    const revoked = await answerWhen(client, first.token, (error) => error !== undefined);
    expect(revoked?.code, "the older Portcullis's revocation").to.equal(grpc.status.UNAUTHENTICATED);

    // Upgraded, Portcullis beats, announcing a minute (the timeout given overrides it), then falls silent.
    await redis.publish(olderFeed.channel, JSON.stringify({ kind: "heartbeat", intervalMs: 60_000 }));
    const second = await mintUserToken(platform.running, { audience: "orders" });
    const refused = await answerWhen(client, second.token, (error) => error !== undefined);
    expect(refused?.code).to.equal(grpc.status.UNAVAILABLE);
    expect(lines.filter((line) => line.includes("heartbeat heard")), "told when the first arrived").to.have.length(1);
    expect(lines.filter((line) => line.includes("no heartbeat yet")), "and warned only once").to.have.length(1);
  });
});
