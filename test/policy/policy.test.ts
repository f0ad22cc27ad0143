import { expect } from "chai";
import { defaultRateLimits } from "../../services/platform/config.js";
import { PolicyError, readPolicies } from "../../services/policy/access.js";
import { ClientIpResolver } from "../../services/policy/client-ip.js";
import { gcra } from "../../services/policy/gcra.js";
import { LeasingRateLimiter, MemoryRateLimiter } from "../../services/policy/rate-limiter.js";
import { services } from "../../services/app/app.js";
import { Caller, RateLimitKey } from "../../gen/portcullis/v1/policy_pb.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";

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

describe("Leased rate limits", () => {
  const minute = 60_000;

  it("never lets two instances together exceed a high limit, and counts small limits call by call", async () => {
    const shared = new MemoryRateLimiter(() => 0);
    const instances = [new LeasingRateLimiter(shared, () => 0), new LeasingRateLimiter(shared, () => 0)];
    let allowed = 0;
    for (let i = 0; i < 1500; i++) if ((await instances[i % 2]!.consume("api_user:u1", 1000, minute)).allowed) allowed++;
    expect(allowed).to.be.at.most(1000).and.at.least(990);

    let small = 0;
    for (let i = 0; i < 10; i++) if ((await instances[i % 2]!.consume("otp:p1", 3, minute)).allowed) small++;
    expect(small).to.equal(3);
  });

  it("takes one lease for many concurrent calls", async () => {
    let storeCalls = 0;
    const shared = new MemoryRateLimiter(() => 0);
    const counting = { consume: (...args: Parameters<MemoryRateLimiter["consume"]>) => (storeCalls++, shared.consume(...args)) };
    const limiter = new LeasingRateLimiter(counting, () => 0);
    const decisions = await Promise.all(Array.from({ length: 10 }, () => limiter.consume("api_ip:1.2.3.4", 1000, minute)));
    expect(decisions.every((d) => d.allowed)).to.equal(true);
    expect(storeCalls).to.equal(1);
  });
});
