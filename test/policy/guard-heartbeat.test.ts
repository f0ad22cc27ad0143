import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { createGrpcServer, createGuard, type Guard, type UnaryHandler } from "../../services/guard/guard.js";
import { createLogger } from "../../services/platform/logger.js";
import type { Running } from "../../services/app/servers.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { grpcClient } from "../support/clients.js";
import { mintUserToken, sharedStores, startPlatform, type SharedStores } from "../support/platform.js";
import { bearer } from "../support/sign-in.js";
import { dropTestDatabases } from "../support/stores.js";

const heartbeatSeconds = 1;
const silenceTimeoutMs = 3 * heartbeatSeconds * 1000;

/**
 * A guard has no Postgres to fall back on: a feed that stops hearing from
 * Portcullis may be missing revocations, so it stops vouching for sessions.
 */
describe("The guard when Portcullis's feed falls silent", () => {
  let stores: SharedStores;
  let portcullis: Running;
  let guard: Guard;
  let downstream: grpc.Server;
  let client: ReturnType<typeof grpcClient<typeof KycService>>;

  before(async () => {
    stores = await sharedStores();
    portcullis = await startPlatform({ ...stores, FEED_HEARTBEAT_SECONDS: String(heartbeatSeconds) });
    guard = await createGuard({
      name: "orders",
      services: [KycService],
      jwksUrl: `http://127.0.0.1:${portcullis.httpPort}/.well-known/jwks.json`,
      redisUrl: stores.REDIS_URL,
      portcullisKeyPrefix: stores.REDIS_KEY_PREFIX,
      limitKeyPrefix: `${stores.REDIS_KEY_PREFIX}downstream:`,
      feedHeartbeatTimeoutMs: silenceTimeoutMs,
      logger: createLogger("silent"),
    });
    const status: UnaryHandler = async () => ({});
    const { server } = createGrpcServer({
      services: [KycService],
      dispatch: guard.dispatch(new Map([[KycService.method.getKycStatus, status]])),
      maxRequestBytes: 65536,
    });
    downstream = server;
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, bound) => (e ? reject(e) : resolve(bound))),
    );
    client = grpcClient(KycService, port);
  });
  after(async () => {
    client.close();
    downstream.forceShutdown();
    await guard.close();
    await portcullis.stop();
    await dropTestDatabases();
  });

  /** The first answer that `wanted` accepts, calling again until then. */
  async function answerWhen(token: string, wanted: (error: grpc.ServiceError | undefined) => boolean, ms = 4 * silenceTimeoutMs) {
    const deadline = Date.now() + ms;
    for (;;) {
      const { error } = await client.call("getKycStatus", {}, bearer(token));
      if (wanted(error)) return error;
      if (Date.now() > deadline) throw new Error(`no such answer in ${ms} ms; last: ${error?.details ?? "served"}`);
      await sleep(50);
    }
  }

  it("stays live while Portcullis beats, refuses user calls once it falls silent, and serves again once it is back", async () => {
    const { token } = await mintUserToken(portcullis, { audience: "orders" });

    // Longer than the timeout, with nothing on the feed but heartbeats.
    const until = Date.now() + silenceTimeoutMs + 1000;
    while (Date.now() < until) {
      expect((await client.call("getKycStatus", {}, bearer(token))).error).to.equal(undefined);
      await sleep(100);
    }

    await portcullis.stop();
    const refused = await answerWhen(token, (error) => error !== undefined);
    expect(refused?.code).to.equal(grpc.status.UNAVAILABLE);
    expect(refused?.details).to.contain("revocations cannot be confirmed");

    portcullis = await startPlatform({ ...stores, FEED_HEARTBEAT_SECONDS: String(heartbeatSeconds) });
    expect(await answerWhen(token, (error) => error === undefined)).to.equal(undefined);
  });
});
