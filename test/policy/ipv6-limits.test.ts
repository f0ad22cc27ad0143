import { randomInt } from "node:crypto";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { ClientIpResolver, ipv6Prefix } from "../../services/policy/client-ip.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { platformForSuite } from "../support/suite-platform.js";

describe("IPv6 clients are rate-limited by prefix", () => {
  it("clears every bit past the prefix, reading :: and a dotted IPv4 tail", () => {
    expect(ipv6Prefix("2001:db8:1:2:3:4:5:6", 64)).to.equal("2001:db8:1:2:0:0:0:0/64");
    expect(ipv6Prefix("2001:db8:1:2::9", 48)).to.equal("2001:db8:1:0:0:0:0:0/48");
    expect(ipv6Prefix("2001:db8:abcd:12ff::1", 56)).to.equal("2001:db8:abcd:1200:0:0:0:0/56");
    expect(ipv6Prefix("64:ff9b::192.0.2.33", 128)).to.equal("64:ff9b:0:0:0:0:c000:221/128");
    expect(ipv6Prefix("fe80::1%eth0", 64)).to.equal("fe80:0:0:0:0:0:0:0/64");
  });

  it("keys an IPv6 client by its /64 and the looser rule by its /48; IPv4 by the address", () => {
    const resolver = new ClientIpResolver([]);
    expect(resolver.limitKey("2001:db8:7:8:aaaa::1")).to.equal(resolver.limitKey("2001:db8:7:8:bbbb::2"));
    expect(resolver.limitKey("2001:db8:7:8::1")).to.not.equal(resolver.limitKey("2001:db8:7:9::1"));
    expect(resolver.wideLimitKey("2001:db8:7:8::1")).to.equal(resolver.wideLimitKey("2001:db8:7:9::1"));
    expect(resolver.limitKey("198.51.100.4")).to.equal("198.51.100.4");
    expect(resolver.wideLimitKey("198.51.100.4")).to.equal(undefined);
    expect(new ClientIpResolver([], { client: 56, wide: 40 }).limitKey("2001:db8:7:8ff::1")).to.equal("2001:db8:7:800:0:0:0:0/56");
  });

  describe("through the chain (otp_verify_ip at 1 an hour, behind a trusted proxy)", () => {
    const platform = platformForSuite({ env: { TRUSTED_PROXIES: "127.0.0.1", RATE_LIMITS: "otp_verify_ip=1/3600" } });
    const auth = platform.client(AuthService);

    /** VerifyOtp from each address in turn; how many the limits refused. */
    async function refusedFrom(addresses: string[]): Promise<number> {
      let refused = 0;
      for (const address of addresses) {
        const phoneNumber = `+4474001${String(randomInt(0, 100_000)).padStart(5, "0")}`;
        const device = { deviceId: "d", deviceType: 1, deviceName: "" };
        const { error } = await auth.call("verifyOtp", { phoneNumber, code: "123456", device }, { "x-forwarded-for": address });
        if (error?.code === grpc.status.RESOURCE_EXHAUSTED) refused++;
        else expect(error?.code, "a wrong code, not a limit").to.equal(grpc.status.INVALID_ARGUMENT);
      }
      return refused;
    }

    it("counts one IPv4 address as one client", async () => {
      expect(await refusedFrom(["203.0.113.7", "203.0.113.7", "203.0.113.7"])).to.equal(2);
    });

    it("counts every address of one /64 as one client", async () => {
      expect(await refusedFrom(["2001:db8:a:1::1", "2001:db8:a:1::2", "2001:db8:a:1:ffff::3"])).to.equal(2);
    });

    it("lets a /48 have 16 clients' worth across its /64s, then refuses the rest", async () => {
      const addresses = Array.from({ length: 20 }, (_, i) => `2001:db8:b:${(i + 1).toString(16)}::1`);
      expect(await refusedFrom(addresses)).to.equal(4);
    });

    it("counts an IPv4-mapped IPv6 address as the IPv4 address", async () => {
      expect(await refusedFrom(["198.51.100.9", "::ffff:198.51.100.9"])).to.equal(1);
    });
  });
});
