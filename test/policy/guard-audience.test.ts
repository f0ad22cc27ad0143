import type { DescMethod } from "@bufbuild/protobuf";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { GuardOptions, UnaryHandler } from "../../services/guard/guard.js";
import type { Principal } from "../../services/kernel/call.js";
import { defaultRateLimits, loadConfig } from "../../services/platform/config.js";
import { connectRedis } from "../../services/platform/redis.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { serveBehindGuard } from "../support/guarded-service.js";
import { mintUserToken } from "../support/platform.js";
import { bearer, newPhone } from "../support/sign-in.js";
import { platformForSuite } from "../support/suite-platform.js";

/**
 * Services behind the guard, each under its own name, serving
 * KycService.GetKycStatus (a user method) and AuthService.SendOtp (a public
 * one, limited per phone number) with handlers of their own.
 */
describe("The guard: audiences, its JWKS URL and its limit keys", () => {
  const platform = platformForSuite();
  const running: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    await Promise.all(running.splice(0).map((service) => service.close()));
  });

  /** A service behind a guard with `options`; `seen` holds the principal of each call its handler served. */
  async function service(options: Partial<GuardOptions> & { name: string }) {
    const seen: (Principal | undefined)[] = [];
    const served: UnaryHandler = async (_request, call) => {
      seen.push(call.principal);
      return {};
    };
    const handlers = new Map<DescMethod, UnaryHandler>([
      [KycService.method.getKycStatus, served],
      [AuthService.method.sendOtp, served],
    ]);
    // SendOtp declares a captcha these tests do not exercise.
    const guarded = await serveBehindGuard(platform.running, platform.stores, handlers, { captcha: "none", ...options });
    const kyc = grpcClient(KycService, guarded.port);
    const auth = grpcClient(AuthService, guarded.port);
    running.push({
      async close() {
        kyc.close();
        auth.close();
        await guarded.close();
      },
    });
    return { kyc, auth, seen };
  }

  const reason = (error: grpc.ServiceError | undefined) => error && detailOf(grpcErrorDetails(error), ErrorInfoSchema)?.reason;

  describe("audiences", () => {
    it("serves a token bound to its name and refuses, as TOKEN_INVALID, one for Portcullis or another service", async () => {
      const { kyc, seen } = await service({ name: "orders" });
      const forOrders = await mintUserToken(platform.running, { audience: "orders" });
      expect((await kyc.call("getKycStatus", {}, bearer(forOrders.token))).error).to.equal(undefined);

      for (const audience of [undefined, "payments"]) {
        const elsewhere = await mintUserToken(platform.running, { audience });
        const refused = (await kyc.call("getKycStatus", {}, bearer(elsewhere.token))).error;
        expect(refused?.code, audience ?? "portcullis").to.equal(grpc.status.UNAUTHENTICATED);
        expect(reason(refused), audience ?? "portcullis").to.equal("TOKEN_INVALID");
      }
      expect(seen, "only the token for orders was served").to.have.length(1);
    });

    it("accepts exactly the audiences it is given in place of its name", async () => {
      const { kyc } = await service({ name: "orders", audiences: ["orders", "portcullis"] });
      const answer = async (audience?: string) => (await kyc.call("getKycStatus", {}, bearer((await mintUserToken(platform.running, { audience })).token))).error;
      expect(await answer("orders")).to.equal(undefined);
      expect(await answer(undefined), "Portcullis's own").to.equal(undefined);
      expect(reason(await answer("payments"))).to.equal("TOKEN_INVALID");
    });

    it("refuses a name that is not a service name", async () => {
      for (const name of ["Orders", "o", "orders_v2", "9orders"]) {
        await expectRefused(service({ name }), /^name:/);
      }
      await expectRefused(service({ name: "orders", audiences: [] }), /^audiences:/);
    });
  });

  describe("its JWKS URL", () => {
    it("refuses plain http off loopback, naming jwksUrl, before connecting to anything", async () => {
      const off = [
        "http://portcullis:8080/.well-known/jwks.json",
        "http://10.0.0.5/.well-known/jwks.json",
        "http://127.0.0.1.example.com/.well-known/jwks.json",
        "ftp://127.0.0.1/jwks.json",
      ];
      for (const url of off) await expectRefused(service({ name: "orders", jwksUrl: url, redisUrl: "redis://unreachable.invalid:1" }), /^jwksUrl:/);
      await expectRefused(service({ name: "orders", jwksUrl: "not a url" }), /^jwksUrl:/);
    });

    it("takes plain http on loopback, by name or address", async () => {
      const { kyc } = await service({ name: "orders", jwksUrl: `http://localhost:${platform.running.httpPort}/.well-known/jwks.json` });
      const token = await mintUserToken(platform.running, { audience: "orders" });
      expect((await kyc.call("getKycStatus", {}, bearer(token.token))).error).to.equal(undefined);
    });
  });

  describe("its captcha option", () => {
    it("refuses to start, naming them, when methods declare a captcha and no captcha option is given, before connecting to anything", async () => {
      await expectRefused(
        service({ name: "orders", captcha: undefined, redisUrl: "redis://unreachable.invalid:1" }),
        /^captcha: \/portcullis\.v1\.AuthService\/SendOtp, \/portcullis\.v1\.AuthService\/VerifyOtp, .*\/Login declare a captcha.*captcha: "none"/,
      );
    });

    it("serves those methods unchecked when told captcha: \"none\"", async () => {
      const { auth } = await service({ name: "orders", captcha: "none" });
      expect((await auth.call("sendOtp", { phoneNumber: newPhone() })).error).to.equal(undefined);
    });

    it("refuses a test token shorter than CAPTCHA_TEST_TOKEN may be", async () => {
      const turnstile = loadConfig({ CAPTCHA_PROVIDER: "turnstile", CAPTCHA_SECRET: "s", CAPTCHA_SITE_KEY: "k" }).captcha;
      await expectRefused(service({ name: "orders", captcha: { ...turnstile, testToken: "guessable" } }), /^captcha\.testToken: at least 32 characters/);
    });
  });

  describe("its limit keys", () => {
    const onePerPhone = { ...defaultRateLimits, otp_send_phone: { limit: 1, periodSeconds: 3600, failOpen: false } };

    it("counts a phone number once across the instances of one service, and apart for another service, each keeping its secret under its own prefix", async () => {
      // Each under a prefix of its own, as their defaults (guard:orders:, guard:payments:) would be.
      const prefix = (name: string) => `${platform.stores.REDIS_KEY_PREFIX}guard:${name}:`;
      const first = await service({ name: "orders", rateLimits: onePerPhone, limitKeyPrefix: prefix("orders") });
      const second = await service({ name: "orders", rateLimits: onePerPhone, limitKeyPrefix: prefix("orders") });
      const other = await service({ name: "payments", rateLimits: onePerPhone, limitKeyPrefix: prefix("payments") });
      const phoneNumber = newPhone();
      expect((await first.auth.call("sendOtp", { phoneNumber })).error).to.equal(undefined);
      expect((await second.auth.call("sendOtp", { phoneNumber })).error?.code, "the same key on the second instance").to.equal(grpc.status.RESOURCE_EXHAUSTED);
      expect((await other.auth.call("sendOtp", { phoneNumber })).error, "another service, another key").to.equal(undefined);

      const redis = await connectRedis(platform.stores.REDIS_URL, false);
      try {
        const [orders, payments] = await Promise.all([redis.get(`${prefix("orders")}limit-key-secret`), redis.get(`${prefix("payments")}limit-key-secret`)]);
        expect(Buffer.from(orders ?? "", "base64"), "32 random bytes").to.have.length(32);
        expect(payments, "a secret of its own").to.not.equal(orders);
      } finally {
        redis.disconnect();
      }
    });

    it("keeps the secret it is given in place of the shared one", async () => {
      const limitKeySecret = Buffer.alloc(32, 7);
      const orders = await service({ name: "orders", rateLimits: onePerPhone, limitKeySecret });
      const payments = await service({ name: "payments", rateLimits: onePerPhone, limitKeySecret });
      const phoneNumber = newPhone();
      expect((await orders.auth.call("sendOtp", { phoneNumber })).error).to.equal(undefined);
      expect((await payments.auth.call("sendOtp", { phoneNumber })).error?.code, "one secret, one key").to.equal(grpc.status.RESOURCE_EXHAUSTED);
    });
  });
});

async function expectRefused(starting: Promise<unknown>, message: RegExp): Promise<void> {
  const error = await starting.then(
    () => undefined,
    (e: Error) => e,
  );
  expect(error?.message).to.match(message);
}
