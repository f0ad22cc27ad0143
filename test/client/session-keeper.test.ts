import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { memoryStorage, SessionEndedError } from "../../client/index.js";
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
});
