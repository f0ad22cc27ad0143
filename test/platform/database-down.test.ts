import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { Running } from "../../services/app/servers.js";
import { isDatabaseUnavailable } from "../../services/platform/database-errors.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { connectCall, grpcClient } from "../support/clients.js";
import { sharedStores, startPlatform } from "../support/platform.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { adminQuery, dropTestDatabases } from "../support/stores.js";
import { until } from "../support/until.js";

describe("Telling a database that is down from a bug", () => {
  it("counts lost, refused and terminated connections as the database being unavailable, and statement errors as not", () => {
    const withState = (code: string, severity = "ERROR") => Object.assign(new Error("x"), { code, severity });
    const socket = (code: string) => Object.assign(new Error(`connect ${code}`), { code });
    for (const error of [
      withState("57P01", "FATAL"),
      withState("57P02"),
      withState("57P03"),
      withState("08006"),
      withState("53300"),
      withState("55000", "FATAL"),
      socket("ECONNREFUSED"),
      socket("ECONNRESET"),
      socket("EPIPE"),
      socket("ETIMEDOUT"),
      new AggregateError([socket("ECONNREFUSED"), socket("ECONNREFUSED")]),
      new Error("timeout exceeded when trying to connect"),
      new Error("Connection terminated unexpectedly"),
      new Error("Connection terminated due to connection timeout", { cause: new Error("Connection terminated") }),
    ]) {
      expect(isDatabaseUnavailable(error), error.message).to.equal(true);
    }
    for (const error of [withState("23505"), withState("42P01"), withState("55000"), new TypeError("undefined is not a function"), "a string"]) {
      expect(isDatabaseUnavailable(error), String(error)).to.equal(false);
    }
  });
});

describe("While Postgres refuses the platform", () => {
  const inbox = new SmsInbox();
  const logLines: string[] = [];
  let platform: Running;
  let database: string;

  before(async () => {
    const smsUrl = await inbox.start();
    const stores = await sharedStores();
    database = new URL(stores.DATABASE_URL).pathname.slice(1);
    platform = await startPlatform({ ...stores, SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: smsUrl }, logLines);
  });
  after(async () => {
    await adminQuery(`alter database ${database} with allow_connections true`);
    await platform?.stop();
    await inbox.stop();
    await dropTestDatabases();
  });

  it("answers UNAVAILABLE (retryable), not INTERNAL, on both doors, and readiness goes NOT_SERVING", async () => {
    const signedIn = (await signInByPhone(platform.grpcPort!, inbox, newPhone()))!;
    const auth = grpcClient(AuthService, platform.grpcPort!);
    const health = grpcClient(Health, platform.grpcPort!);
    try {
      expect((await auth.call("getProfile", {}, bearer(signedIn.tokens!.accessToken))).error).to.equal(undefined);

      // Refused as a stopped server would refuse it, without stopping the Postgres other test runs share.
      await adminQuery(`alter database ${database} with allow_connections false`);
      await adminQuery(`select pg_terminate_backend(pid) from pg_stat_activity where datname = '${database}'`);

      const calls = {
        GetProfile: () => auth.call("getProfile", {}, bearer(signedIn.tokens!.accessToken)),
        RefreshToken: () => auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken }),
        SendOtp: () => auth.call("sendOtp", { phoneNumber: newPhone() }),
      };
      for (const [name, call] of Object.entries(calls)) {
        const { error } = await call();
        expect(error?.code, `${name}: ${error?.details}`).to.equal(grpc.status.UNAVAILABLE);
      }
      const viaGateway = await connectCall(platform.httpPort!, `/${AuthService.typeName}/GetProfile`, {}, bearer(signedIn.tokens!.accessToken));
      expect(viaGateway.status).to.equal(503);
      expect(viaGateway.json?.code).to.equal("unavailable");

      const levels = logLines.map((line) => JSON.parse(line) as { level: string; msg: string });
      expect(levels.filter((line) => line.msg === "database unavailable").map((line) => line.level)).to.deep.equal(["warn", "warn", "warn", "warn"]);
      expect(levels.filter((line) => line.msg === "unexpected error")).to.deep.equal([]);

      await until(async () => (await health.call("check", { service: "" })).response?.status === HealthCheckResponse_ServingStatus.NOT_SERVING, 10_000);
      expect((await fetch(`http://127.0.0.1:${platform.httpPort}/readyz`)).status).to.equal(503);
    } finally {
      auth.close();
      health.close();
    }
  });
});
