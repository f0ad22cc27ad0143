import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { Running } from "../../services/app/servers.js";
import { Code, ConnectError } from "../../services/kernel/errors.js";
import { sessionFeedKeys } from "../../services/platform/config.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { grpcClient } from "../support/clients.js";
import { mintUserToken, sharedStores, startPlatform, type SharedStores } from "../support/platform.js";
import { freePort, RedisServer } from "../support/redis-servers.js";
import { newPhone } from "../support/sign-in.js";
import { dropTestDatabases } from "../support/stores.js";
import { until } from "../support/until.js";

const run = promisify(execFile);

describe("A stalled Redis", () => {
  // Its own Redis: pausing the shared one would stall every other test run.
  let redis: RedisServer;
  let stores: SharedStores;
  let platform: Running;

  before(async () => {
    redis = new RedisServer(await freePort());
    await redis.start();
    stores = { ...(await sharedStores()), REDIS_URL: redis.url };
    platform = await startPlatform({ ...stores, REDIS_COMMAND_TIMEOUT_MS: "300" });
  });
  after(async () => {
    await platform?.stop();
    await redis?.destroy();
    await dropTestDatabases();
  });

  it("does not stall calls: a fail-open limit lets GetJwks through and a fail-closed one refuses SendOtp, both before the pause ends", async () => {
    const auth = grpcClient(AuthService, platform.grpcPort!);
    const settled: string[] = [];
    await run("redis-cli", ["-p", String(redis.port), "client", "pause", "3000", "all"]);
    // A command from another client waits out the pause, so its reply marks the pause's end.
    const pauseEnded = run("redis-cli", ["-p", String(redis.port), "ping"]).then(() => settled.push("pause ended"));
    const jwks = auth.call("getJwks", {}).then((result) => (settled.push("GetJwks"), result));
    const otp = auth.call("sendOtp", { phoneNumber: newPhone() }).then((result) => (settled.push("SendOtp"), result));
    const [jwksResult, otpResult] = await Promise.all([jwks, otp, pauseEnded]);
    auth.close();

    expect(jwksResult.error).to.equal(undefined);
    expect(jwksResult.response!.keys).to.not.be.empty;
    expect(otpResult.error?.code).to.equal(grpc.status.UNAVAILABLE);
    expect(settled.indexOf("GetJwks"), settled.join(", ")).to.be.lessThan(settled.indexOf("pause ended"));
    expect(settled.indexOf("SendOtp"), settled.join(", ")).to.be.lessThan(settled.indexOf("pause ended"));
  });

  it("keeps the revocation feed subscribed through the pause: a change published afterwards still arrives", async () => {
    await run("redis-cli", ["-p", String(redis.port), "client", "pause", "1000", "all"]);
    await run("redis-cli", ["-p", String(redis.port), "ping"]);
    const { token } = await mintUserToken(platform);
    const principal = await platform.app!.tokens.verify(token);
    const feed = platform.app!.revocations;
    expect(feed.check(principal).sessionId).to.equal(principal.sessionId);

    const event = JSON.stringify({ kind: "revoked", sessionIds: [principal.sessionId], untilMs: Date.now() + 60_000 });
    await run("redis-cli", ["-p", String(redis.port), "publish", sessionFeedKeys(stores.REDIS_KEY_PREFIX).channel, event]);
    await until(() => {
      try {
        feed.check(principal);
        return false;
      } catch (error) {
        return error instanceof ConnectError && error.code === Code.Unauthenticated;
      }
    });
  });
});

