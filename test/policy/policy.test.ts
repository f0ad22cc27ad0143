import { randomUUID } from "node:crypto";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { defaultRateLimits } from "../../services/platform/config.js";
import { PolicyError, readPolicies } from "../../services/policy/access.js";
import { ClientIpResolver } from "../../services/policy/client-ip.js";
import { gcra } from "../../services/policy/gcra.js";
import { consumeRule, LeasingRateLimiter, MemoryRateLimiter, ruleGate } from "../../services/policy/rate-limiter.js";
import { createLogger } from "../../services/platform/logger.js";
import { rateLimitRefusals } from "../../services/platform/metrics.js";
import { services } from "../../services/app/app.js";
import { Caller, RateLimitKey } from "../../gen/portcullis/v1/policy_pb.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { sharedStores, startPlatform } from "../support/platform.js";
import { dropTestDatabases } from "../support/stores.js";
import { platformForSuite } from "../support/suite-platform.js";

describe("Access policies from the contract", () => {
  it("reads a policy for every RPC of the three services", () => {
    const policies = readPolicies(services, defaultRateLimits);
    expect(policies.size).to.equal(services.reduce((n, s) => n + s.methods.length, 0));
    const sendOtp = policies.get(AuthService.method.sendOtp)!;
    expect(sendOtp.caller).to.equal(Caller.PUBLIC);
    expect(sendOtp.anonymousLimits.map((l) => [l.name, l.key])).to.deep.equal([
      ["otp_send_phone", RateLimitKey.PHONE],
      ["otp_send_ip", RateLimitKey.IP],
      ["otp_send_global", RateLimitKey.GLOBAL],
    ]);
    expect(policies.get(KycService.method.submitEnhancedKyc)!.minKycLevel).to.equal(2);
    expect(policies.get(KycService.method.reviewKycSubmission)!.permissions).to.deep.equal(["kyc.review"]);
  });

  it("refuses to start with a method that declares no policy (default deny)", () => {
    expect(() => readPolicies([Health], defaultRateLimits)).to.throw(PolicyError, /grpc.health.v1.Health\/Check: no \(portcullis.v1.access\) option/);
  });

  it("refuses to start when a policy names a rate-limit rule that is not configured", () => {
    const { otp_send_phone: _, ...withoutOne } = defaultRateLimits;
    expect(() => readPolicies(services, withoutOne)).to.throw(PolicyError, /"otp_send_phone" is not configured/);
  });
});

describe("GCRA rate limiting", () => {
  const hour = 3_600_000;

  it("allows the whole limit at once, then refuses with the wait until the next slot", () => {
    let tat: number | undefined;
    for (let i = 0; i < 3; i++) {
      const decision = gcra(tat, 0, 3, hour);
      expect(decision.allowed).to.equal(true);
      tat = decision.tat;
    }
    const refused = gcra(tat, 0, 3, hour);
    expect(refused).to.include({ allowed: false, retryAfterMs: hour / 3 });
    expect(refused.tat, "a refusal does not use up capacity").to.equal(tat);
  });

  it("gives back one request per period/limit", () => {
    let tat: number | undefined;
    for (let i = 0; i < 3; i++) tat = gcra(tat, 0, 3, hour).tat;
    expect(gcra(tat, hour / 3, 3, hour).allowed).to.equal(true);
  });
});

describe("Client IP", () => {
  it("uses the peer address when the peer is not a trusted proxy, whatever X-Forwarded-For says", () => {
    const resolver = new ClientIpResolver(["10.0.0.0/8"]);
    expect(resolver.resolve("203.0.113.9:5000", "1.2.3.4")).to.equal("203.0.113.9");
  });

  it("takes the right-most untrusted X-Forwarded-For entry behind trusted proxies", () => {
    const resolver = new ClientIpResolver(["10.0.0.0/8", "127.0.0.1"]);
    expect(resolver.resolve("ipv4:127.0.0.1:5000", "6.6.6.6, 198.51.100.7, 10.1.2.3")).to.equal("198.51.100.7");
  });

  it("ignores X-Forwarded-For when no proxy is trusted, and unwraps IPv4-mapped addresses", () => {
    const resolver = new ClientIpResolver([]);
    expect(resolver.resolve("[::ffff:192.0.2.1]:443", "6.6.6.6")).to.equal("192.0.2.1");
  });
});

describe("Client IP behind a trusted proxy", () => {
  const platform = platformForSuite({ env: { TRUSTED_PROXIES: "127.0.0.1" } });
  const auth = platform.client(AuthService);

  /** The address the audit log records for a call carrying these X-Forwarded-For values. */
  async function auditedIp(forwardedFor: string | string[]) {
    const requestId = randomUUID();
    const { error } = await auth.call("refreshToken", { refreshToken: "not-a-refresh-token" }, { "x-request-id": requestId, "x-forwarded-for": forwardedFor });
    expect(error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    const rows = await platform.db.query("select ip_address from audit_event where request_id = $1", [requestId]);
    expect(rows.rows).to.have.length(1);
    return rows.rows[0].ip_address as string;
  }

  it("reads x-forwarded-for sent as two metadata values as one list, so the right-most untrusted hop is the client", async () => {
    // The client wrote 6.6.6.6 itself; the trusted proxy (127.0.0.1) appended the address it saw as a second value.
    expect(await auditedIp(["6.6.6.6", "198.51.100.7"])).to.equal("198.51.100.7");
    expect(await auditedIp("6.6.6.6, 198.51.100.7"), "the same list as one value").to.equal("198.51.100.7");
    expect(await auditedIp(["6.6.6.6", "198.51.100.7", "127.0.0.1"]), "trusted hops are skipped").to.equal("198.51.100.7");
  });
});

describe("Leased rate limits", () => {
  const minute = 60_000;

  it("never lets two instances together exceed a high limit, and counts small limits call by call", async () => {
    const shared = new MemoryRateLimiter(() => 0);
    const instances = [new LeasingRateLimiter(shared, () => 0), new LeasingRateLimiter(shared, () => 0)];
    let allowed = 0;
    for (let i = 0; i < 1500; i++) if ((await instances[i % 2]!.consume("api_user:u1", 1000, minute, { leasable: true })).allowed) allowed++;
    expect(allowed).to.be.at.most(1000).and.at.least(990);

    let small = 0;
    for (let i = 0; i < 10; i++) if ((await instances[i % 2]!.consume("otp:p1", 3, minute, { leasable: true })).allowed) small++;
    expect(small).to.equal(3);
  });

  it("takes one lease for many concurrent calls", async () => {
    let storeCalls = 0;
    const shared = new MemoryRateLimiter(() => 0);
    const counting = { consume: (...args: Parameters<MemoryRateLimiter["consume"]>) => (storeCalls++, shared.consume(...args)) };
    const limiter = new LeasingRateLimiter(counting, () => 0);
    const decisions = await Promise.all(Array.from({ length: 10 }, () => limiter.consume("api_ip:1.2.3.4", 1000, minute, { leasable: true })));
    expect(decisions.every((d) => d.allowed)).to.equal(true);
    expect(storeCalls).to.equal(1);
  });

  it("counts a fail-closed rule in the store call by call at any size, and leases only fail-open rules", async () => {
    let storeCalls = 0;
    const shared = new MemoryRateLimiter(() => 0);
    const counting = { consume: (...args: Parameters<MemoryRateLimiter["consume"]>) => (storeCalls++, shared.consume(...args)) };
    const limiter = new LeasingRateLimiter(counting, () => 0);
    const logger = createLogger("silent");

    for (let i = 0; i < 20; i++) await consumeRule(limiter, "otp_send_global", { limit: 1000, periodSeconds: 60, failOpen: false }, "all", logger);
    expect(storeCalls, "credential rule").to.equal(20);

    storeCalls = 0;
    for (let i = 0; i < 20; i++) await consumeRule(limiter, "api_user", { limit: 1000, periodSeconds: 60, failOpen: true }, "u1", logger);
    expect(storeCalls, "capacity rule: two leases of 10").to.equal(2);
  });
});

describe("A rule applied by a handler", () => {
  it("counts its refusals with the chain's, by rule", async () => {
    const refusals = async () => (await rateLimitRefusals.get()).values.find((v) => v.labels.rule === "refresh_user")?.value ?? 0;
    const gate = ruleGate(new MemoryRateLimiter(() => 0), "refresh_user", { limit: 1, periodSeconds: 60, failOpen: false }, createLogger("silent"));
    const before = await refusals();
    await gate("u1");
    expect(await refusals()).to.equal(before);
    await gate("u1").then(() => expect.fail("the second call within the period passed"), () => {});
    expect(await refusals()).to.equal(before + 1);
  });
});

describe("Rate limits shared by instances", () => {
  it("counts calls to two instances on one Redis as one limit, exactly", async () => {
    const stores = await sharedStores();
    const env = { ...stores, RATE_LIMITS: "otp_send_phone=3/3600" };
    const [a, b] = [await startPlatform(env), await startPlatform(env)];
    try {
      const clients = [grpcClient(AuthService, a.grpcPort!), grpcClient(AuthService, b.grpcPort!)];
      const codes: number[] = [];
      for (let i = 0; i < 8; i++) {
        const { error } = await clients[i % 2]!.call("sendOtp", { phoneNumber: "+44 7700 900123" });
        codes.push(error!.code);
        if (error!.code === grpc.status.RESOURCE_EXHAUSTED) {
          const retry = detailOf(grpcErrorDetails(error!), RetryInfoSchema);
          expect(Number(retry?.retryDelay?.seconds)).to.be.greaterThan(0);
        }
      }
      expect(codes.filter((c) => c !== grpc.status.RESOURCE_EXHAUSTED)).to.have.length(3);
      expect(codes.slice(3).every((c) => c === grpc.status.RESOURCE_EXHAUSTED)).to.equal(true);

      const http = await connectCall(b.httpPort!, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: "+447700900123" });
      expect(http.status).to.equal(429);
      expect(Number(http.headers.get("retry-after"))).to.be.greaterThan(0);
      clients.forEach((c) => c.close());
    } finally {
      await a.stop();
      await b.stop();
      await dropTestDatabases();
    }
  });
});
