import { expect } from "chai";
import { memoryStorage } from "../../client/index.js";
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
});
