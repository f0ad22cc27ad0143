import { expect } from "chai";
import { localStorageAdapter, memoryStorage, sessionStorageAdapter, type StoredSession } from "../../client/index.js";

/** Web Storage as a browser has it: strings under keys. */
class FakeStorage implements Storage {
  private readonly items = new Map<string, string>();
  get length() {
    return this.items.size;
  }
  clear() {
    this.items.clear();
  }
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  key(index: number) {
    return [...this.items.keys()][index] ?? null;
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
  setItem(key: string, value: string) {
    this.items.set(key, value);
  }
}

const session: StoredSession = {
  accessToken: "access",
  accessTokenExpireTime: 1_800_000_000_000,
  refreshToken: "refresh",
  refreshTokenExpireTime: 1_900_000_000_000,
  sessionId: "0b5f4e8a-1c1e-4f7e-9a57-5d0f6a9b1c2d",
  userId: "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
};

describe("portcullis/client token storage", () => {
  it("memoryStorage keeps a copy, not the caller's object", async () => {
    const storage = memoryStorage();
    expect(await storage.load()).to.equal(null);
    const saved = { ...session };
    await storage.save(saved);
    saved.accessToken = "changed";
    expect(await storage.load()).to.deep.equal(session);
    await storage.save(null);
    expect(await storage.load()).to.equal(null);
  });

  for (const [name, adapter] of [["localStorageAdapter", localStorageAdapter], ["sessionStorageAdapter", sessionStorageAdapter]] as const) {
    it(`${name} keeps the session as JSON under "portcullis.session", or a key of the app's`, async () => {
      const web = new FakeStorage();
      await adapter(undefined, web).save(session);
      expect(JSON.parse(web.getItem("portcullis.session")!)).to.deep.equal(session);
      expect(await adapter(undefined, web).load()).to.deep.equal(session);

      await adapter("acme.auth", web).save(session);
      expect(web.getItem("acme.auth")).to.not.equal(null);
      await adapter(undefined, web).save(null);
      expect(web.getItem("portcullis.session")).to.equal(null);
    });

    it(`${name} reads anything but a whole session as signed out`, async () => {
      const web = new FakeStorage();
      const storage = adapter(undefined, web);
      for (const raw of ["not json", "null", "42", JSON.stringify({ ...session, refreshToken: "" }), JSON.stringify({ ...session, accessTokenExpireTime: "soon" }), JSON.stringify({ ...session, userId: 7 })]) {
        web.setItem("portcullis.session", raw);
        expect(await storage.load(), raw).to.equal(null);
      }
    });
  }

  it("says so when Web Storage is missing (Node, some private modes)", () => {
    expect(() => localStorageAdapter()).to.throw(/localStorage is not available/);
  });
});
