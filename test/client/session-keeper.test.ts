import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { memoryStorage, PortcullisError, SessionEndedError } from "../../client/index.js";
import { SessionKeeper } from "../../client/session-keeper.js";
import type { Pair } from "../../client/token-pair.js";

describe("portcullis/client session keeper", () => {
  it("keeps a step-up's access token answered while a refresh is on its way, with the refresh's new refresh token", async () => {
    const storage = memoryStorage();
    let answer: (pair: Pair) => void = () => {};
    const answered = new Promise<Pair>((resolve) => (answer = resolve));
    const keeper = new SessionKeeper({ baseUrl: "http://keeper.test", storage, refresh: () => answered, refreshAheadSeconds: 30, locks: null, now: Date.now });
    const hour = 3_600_000;
    await keeper.signedIn({ accessToken: "first", accessTokenExpireTime: Date.now() - 1000, refreshToken: "first-refresh", refreshTokenExpireTime: Date.now() + hour });

    const refreshed = keeper.refresh((await storage.load())!);
    const steppedUp = keeper.steppedUp("stepped-up", Date.now() + hour);
    answer({ accessToken: "refreshed", accessTokenExpireTime: Date.now() + hour, refreshToken: "second-refresh", refreshTokenExpireTime: Date.now() + 2 * hour });
    await Promise.all([refreshed, steppedUp]);

    expect(await storage.load()).to.include({ accessToken: "stepped-up", refreshToken: "second-refresh" });
    keeper.close();
  });

  it("leaves a session signed in by another tab while its own refresh was refused", async () => {
    const storage = memoryStorage();
    const hour = 3_600_000;
    const newer = { accessToken: "newer", accessTokenExpireTime: Date.now() + hour, refreshToken: "newer-refresh", refreshTokenExpireTime: Date.now() + hour, sessionId: "s2" };
    const ended: string[] = [];
    const keeper = new SessionKeeper({
      baseUrl: "http://keeper.test",
      storage,
      // Another tab signs out and in again while this refresh is on its way; the old session's refresh is refused.
      refresh: async () => {
        await storage.save(newer);
        throw new ConnectError("session revoked", Code.Unauthenticated);
      },
      onSessionEnd: ({ reason }) => ended.push(reason),
      refreshAheadSeconds: 30,
      locks: null,
      now: Date.now,
    });
    await keeper.signedIn({ accessToken: "old", accessTokenExpireTime: Date.now() - 1000, refreshToken: "old-refresh", refreshTokenExpireTime: Date.now() + hour, sessionId: "s1" });

    const error = await keeper.refresh((await storage.load())!).catch((e: unknown) => e);
    await Promise.resolve();

    expect(error).to.be.instanceOf(SessionEndedError);
    expect(await storage.load()).to.deep.equal(newer);
    expect(ended).to.deep.equal([]);
    keeper.close();
  });

  describe("a call's token refused for good", () => {
    const hour = 3_600_000;
    const used = { accessToken: "old", accessTokenExpireTime: Date.now() + hour, refreshToken: "old-refresh", refreshTokenExpireTime: Date.now() + hour, sessionId: "s1" };
    const revoked = new PortcullisError(new ConnectError("session revoked", Code.Unauthenticated), "SESSION_REVOKED");

    async function refusedAfter(storedMeanwhile: typeof used) {
      const storage = memoryStorage();
      const ended: string[] = [];
      const keeper = new SessionKeeper({ baseUrl: "http://keeper.test", storage, refresh: () => Promise.reject(new Error("no refresh")), onSessionEnd: ({ reason }) => ended.push(reason), refreshAheadSeconds: 30, locks: null, now: Date.now });
      await keeper.signedIn(used);
      // Another tab writes its session while the call is on its way.
      await storage.save(storedMeanwhile);
      const error = await keeper.refused(used, revoked);
      await Promise.resolve();
      keeper.close();
      return { error, stored: await storage.load(), ended };
    }

    it("ends the session when another tab has rotated it meanwhile: the server revoked the session, not the pair", async () => {
      const { error, stored, ended } = await refusedAfter({ ...used, accessToken: "rotated", refreshToken: "rotated-refresh" });

      expect(error).to.be.instanceOf(SessionEndedError).and.to.include({ reason: "SESSION_REVOKED" });
      expect(stored).to.equal(null);
      expect(ended).to.deep.equal(["SESSION_REVOKED"]);
    });

    it("leaves a session signed in by another tab meanwhile", async () => {
      const newer = { ...used, accessToken: "newer", refreshToken: "newer-refresh", sessionId: "s2" };
      const { error, stored, ended } = await refusedAfter(newer);

      expect(error).to.equal(revoked);
      expect(stored).to.deep.equal(newer);
      expect(ended).to.deep.equal([]);
    });
  });
});
