import { expect } from "chai";
import { currentSigningKey, isExpired, nextKeyActivation, type KeyTimes } from "../../services/tokens/key-schedule.js";

const hour = 3_600_000;
const day = 24 * hour;
const policy = { rotationIntervalSeconds: 30 * 86_400, publishLeadSeconds: 3_600, verifyGraceSeconds: 905 };
const start = Date.parse("2026-01-01T00:00:00Z");
const at = (ms: number) => new Date(start + ms);
const key = (kid: string, activateMs: number, retireMs?: number): KeyTimes => ({
  kid,
  activateTime: at(activateMs),
  retireTime: retireMs === undefined ? null : at(retireMs),
});

describe("The key schedule", () => {
  describe("currentSigningKey: the latest key already active", () => {
    it("picks the most recently activated key, whatever the order of the ring", () => {
      const ring = [key("b", 30 * day), key("a", 0), key("c", 10 * day)];
      expect(currentSigningKey(ring, at(31 * day))?.kid).to.equal("b");
    });

    it("ignores a key published ahead of its activation, until that moment", () => {
      const ring = [key("a", 0), key("b", 30 * day)];
      expect(currentSigningKey(ring, at(30 * day - 1))?.kid).to.equal("a");
      expect(currentSigningKey(ring, at(30 * day))?.kid, "from its activation on").to.equal("b");
    });

    it("has none when no key is active yet", () => {
      expect(currentSigningKey([], at(0))).to.equal(undefined);
      expect(currentSigningKey([key("a", day)], at(0))).to.equal(undefined);
    });
  });

  describe("nextKeyActivation: when the next key starts signing", () => {
    it("gives an empty ring a key at once: no JWKS can have been cached yet", () => {
      expect(nextKeyActivation([], at(5 * day), policy)).to.deep.equal(at(5 * day));
    });

    it("wants nothing while the newest key has more than the publish lead left of its interval", () => {
      expect(nextKeyActivation([key("a", 0)], at(10 * day), policy)).to.equal(undefined);
      expect(nextKeyActivation([key("a", 0)], at(30 * day - hour - 1), policy)).to.equal(undefined);
    });

    it("publishes the next key a lead ahead: it activates when the newest has signed for a whole interval", () => {
      expect(nextKeyActivation([key("a", 0)], at(30 * day - hour), policy)).to.deep.equal(at(30 * day));
    });

    it("never activates a key sooner than a publish lead from now: a late rotation pushes the activation back", () => {
      expect(nextKeyActivation([key("a", 0)], at(30 * day - 30 * 60_000), policy), "inside the lead").to.deep.equal(at(30 * day + 30 * 60_000));
      expect(nextKeyActivation([key("a", 0)], at(45 * day), policy), "overdue").to.deep.equal(at(45 * day + hour));
    });

    it("wants nothing while a published key waits to activate", () => {
      expect(nextKeyActivation([key("a", 0), key("b", 30 * day)], at(30 * day - 1), policy)).to.equal(undefined);
    });

    it("times the next key from the newest one, not the first", () => {
      const ring = [key("b", 30 * day), key("a", 0)];
      expect(nextKeyActivation(ring, at(40 * day), policy)).to.equal(undefined);
      expect(nextKeyActivation(ring, at(60 * day - hour), policy)).to.deep.equal(at(60 * day));
    });
  });

  describe("isExpired: when a retired key can leave the JWKS", () => {
    it("keeps a key that was never retired", () => {
      expect(isExpired(key("a", 0), at(365 * day), policy)).to.equal(false);
    });

    it("keeps a retired key while its last tokens still verify, and drops it after the grace", () => {
      const retired = key("a", 0, 30 * day);
      expect(isExpired(retired, at(30 * day + 905_000), policy), "at the end of the grace").to.equal(false);
      expect(isExpired(retired, at(30 * day + 905_001), policy)).to.equal(true);
    });
  });
});
