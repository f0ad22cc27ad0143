import { setTimeout as sleep } from "node:timers/promises";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { AccessTokens } from "../../services/tokens/access-token.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";
import {
  createPortcullisClient,
  memoryStorage,
  PortcullisError,
  SessionEndedError,
  type Locks,
  type PortcullisClientOptions,
  type StoredSession,
  type TokenStorage,
} from "../../client/index.js";
import { grpcClient } from "../support/clients.js";
import { sharedStores, startPlatform } from "../support/platform.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";
import { until } from "../support/until.js";

/**
 * The client's side of the wire: every request by method name with the Authorization it carried, methods that fail
 * as if offline, that never answer (until the call gives up), and whose token reaches the server under a retired key.
 */
class Wire {
  readonly requests: { method: string; authorization: string | null }[] = [];
  readonly offline = new Set<string>();
  readonly hung = new Set<string>();
  /** Methods whose next request reaches the server but whose answer never comes back. */
  readonly lost = new Set<string>();
  readonly retiredKey = new Set<string>();
  readonly fetch: typeof globalThis.fetch = async (input, init) => {
    const method = String(input).split("/").at(-1)!;
    const headers = new Headers(init?.headers);
    if (this.retiredKey.has(method)) headers.set("authorization", `Bearer ${underRetiredKey(headers.get("authorization")!.slice("Bearer ".length))}`);
    this.requests.push({ method, authorization: headers.get("authorization") });
    if (this.offline.has(method)) throw new TypeError("fetch failed");
    if (this.lost.delete(method)) {
      await fetch(input, { ...init, headers, signal: undefined });
      return this.neverAnswered(init);
    }
    if (this.hung.has(method)) return this.neverAnswered(init);
    return fetch(input, { ...init, headers });
  };

  /** Until the call gives up, as a real fetch does when its signal aborts. */
  private neverAnswered(init: RequestInit | undefined): Promise<Response> {
    return new Promise<Response>((_, reject) => {
      // A lost answer's real request may itself outlast the call's deadline.
      if (init?.signal?.aborted) reject(init.signal.reason);
      init?.signal?.addEventListener("abort", () => reject(init.signal!.reason));
    });
  }

  count(method: string): number {
    return this.requests.filter((r) => r.method === method).length;
  }
}

/** navigator.locks as tabs of one origin share it: one holder per name, the others queued; query lists the held. */
function sharedLocks(): Locks {
  const tails = new Map<string, Promise<unknown>>();
  const held = new Set<string>();
  return {
    request(name, callback) {
      const granted = (tails.get(name) ?? Promise.resolve()).then(async () => {
        held.add(name);
        try {
          return await callback();
        } finally {
          held.delete(name);
        }
      });
      tails.set(name, granted.catch(() => {}));
      return granted;
    },
    query: async () => ({ held: [...held].map((name) => ({ name })) }),
  };
}

/** Two tabs' views of one localStorage, each seeing the other's writes `lagMs` late, as Chromium's tabs do even under a lock. */
function laggingViews(lagMs: number): [TokenStorage, TokenStorage] {
  const views: (StoredSession | null)[] = [null, null];
  const view = (tab: 0 | 1): TokenStorage => ({
    load: () => views[tab] && { ...views[tab] },
    save: (session) => {
      views[tab] = session;
      setTimeout(() => (views[1 - tab] = session), lagMs);
    },
  });
  return [view(0), view(1)];
}

/** `accessToken` as if signed with a key the server has since let go: its kid names none the server holds. */
function underRetiredKey(accessToken: string): string {
  const [header, ...rest] = accessToken.split(".");
  const fields = JSON.parse(Buffer.from(header!, "base64url").toString()) as object;
  return [Buffer.from(JSON.stringify({ ...fields, kid: "retired" })).toString("base64url"), ...rest].join(".");
}

async function storedIn(storage: TokenStorage): Promise<StoredSession> {
  const session = await storage.load();
  expect(session, "a stored session").to.not.equal(null);
  return session!;
}

async function markExpired(storage: TokenStorage): Promise<void> {
  await storage.save({ ...(await storedIn(storage)), accessTokenExpireTime: Date.now() - 1000 });
}

describe("portcullis/client sessions, against the gateway", () => {
  const inbox = new SmsInbox();
  let baseUrl: string;
  let devices = 0;

  const rateLimits = "otp_send_ip=1000/3600,otp_verify_ip=1000/3600,otp_send_phone=10/3600,refresh_ip=1000/60,refresh_user=1000/60";
  const platform = platformForSuite({
    inboxes: [inbox],
    env: {
      // No grace for a used refresh token: presenting one twice revokes the session, so a double refresh cannot hide.
      REFRESH_REUSE_INTERVAL: "0",
      RATE_LIMITS: rateLimits,
    },
  });

  before(() => {
    baseUrl = `http://127.0.0.1:${platform.running.httpPort}`;
  });

  /** A client that has signed a new phone in through itself; `ended` collects its onSessionEnd reasons. */
  async function signedIn(options: Partial<PortcullisClientOptions> = {}, phone = newPhone()) {
    const wire = new Wire();
    const ended: string[] = [];
    const storage = options.storage ?? memoryStorage();
    const client = createPortcullisClient({ baseUrl, fetch: wire.fetch, onSessionEnd: ({ reason }) => ended.push(reason), locks: null, ...options, storage });
    await client.auth.sendOtp({ phoneNumber: phone });
    const verified = await client.auth.verifyOtp({
      phoneNumber: phone,
      code: inbox.codeFor(phone),
      device: { deviceId: `browser-${devices++}`, deviceType: DeviceType.WEB, deviceName: "Browser" },
    });
    return { client, wire, ended, storage, phone, verified };
  }

  /** The server refuses `accessToken` (revocation reaches the session guard through the feed, a moment later). */
  async function refusedByServer(accessToken: string) {
    const auth = grpcClient(AuthService, platform.running.grpcPort!);
    try {
      await until(async () => (await auth.call("getProfile", {}, bearer(accessToken))).error !== undefined);
    } finally {
      auth.close();
    }
  }

  it("stores a sign-in's tokens and sends the access token only to methods the contract does not make public", async () => {
    const { client, wire, verified, storage } = await signedIn();
    const stored = await storedIn(storage);
    // On the client's clock: the server's times moved alike, here (one clock) by no more than iat's rounding and the answer's way.
    const shift = stored.accessTokenExpireTime - timestampMs(verified.tokens!.accessTokenExpireTime!);
    expect(Math.abs(shift)).to.be.below(5000);
    expect(stored).to.deep.equal({
      accessToken: verified.tokens!.accessToken,
      accessTokenExpireTime: timestampMs(verified.tokens!.accessTokenExpireTime!) + shift,
      refreshToken: verified.tokens!.refreshToken,
      refreshTokenExpireTime: timestampMs(verified.tokens!.refreshTokenExpireTime!) + shift,
      sessionId: verified.sessionId,
      userId: verified.user!.userId,
    });
    expect(await client.currentSession()).to.deep.equal(stored);

    await client.auth.getJwks({});
    await client.auth.getProfile({});
    await client.sessions.getSession({});
    expect(wire.requests).to.deep.equal([
      { method: "SendOtp", authorization: null },
      { method: "VerifyOtp", authorization: null },
      { method: "GetJwks", authorization: null },
      { method: "GetProfile", authorization: `Bearer ${stored.accessToken}` },
      { method: "GetSession", authorization: `Bearer ${stored.accessToken}` },
    ]);
  });

  it("refuses a user method without a session before sending anything", async () => {
    const wire = new Wire();
    const client = createPortcullisClient({ baseUrl, fetch: wire.fetch, locks: null });
    const error = await client.auth.getProfile({}).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(SessionEndedError);
    expect(error).to.include({ code: Code.Unauthenticated, reason: "TOKEN_MISSING" });
    expect(wire.requests).to.deep.equal([]);
  });

  it("refreshes an access token due within refreshAheadSeconds first, and leaves one that is not", async () => {
    const { client, wire, storage } = await signedIn({ refreshAheadSeconds: 30 });
    await storage.save({ ...(await storedIn(storage)), accessTokenExpireTime: Date.now() + 60_000 });
    await client.auth.getProfile({});
    expect(wire.count("RefreshToken")).to.equal(0);

    await storage.save({ ...(await storedIn(storage)), accessTokenExpireTime: Date.now() + 20_000 });
    await client.auth.getProfile({});
    expect(wire.count("RefreshToken")).to.equal(1);
    expect((await storedIn(storage)).accessTokenExpireTime).to.be.greaterThan(Date.now() + 60_000);
  });

  it("calls with the current token when a refresh made before it is due fails on the network", async () => {
    const { client, wire, ended, storage } = await signedIn({ refreshAheadSeconds: 30 });
    const before = { ...(await storedIn(storage)), accessTokenExpireTime: Date.now() + 20_000 };
    await storage.save(before);
    wire.offline.add("RefreshToken");

    await client.auth.getProfile({});

    expect(wire.count("RefreshToken"), "tried, and asked once more at once").to.equal(2);
    expect(wire.requests.at(-1)).to.deep.equal({ method: "GetProfile", authorization: `Bearer ${before.accessToken}` });
    expect(await storage.load()).to.deep.equal(before);
    expect(ended).to.deep.equal([]);
  });

  it("keeps expiry times on the client's clock: one two hours ahead refreshes when due, not on every call", async () => {
    const twoHours = 2 * 3_600_000;
    const { client, wire, storage, verified } = await signedIn({ now: () => Date.now() + twoHours });
    expect((await storedIn(storage)).accessTokenExpireTime - timestampMs(verified.tokens!.accessTokenExpireTime!)).to.be.closeTo(twoHours, 2000);

    for (let i = 0; i < 3; i++) await client.auth.getProfile({});
    expect(wire.count("RefreshToken")).to.equal(0);

    // Expired on the client's clock (two hours ahead of Date.now()), though not on the server's: refreshed once, and the new pair holds.
    await storage.save({ ...(await storedIn(storage)), accessTokenExpireTime: Date.now() + twoHours - 1000 });
    for (let i = 0; i < 3; i++) await client.auth.getProfile({});
    expect(wire.count("RefreshToken")).to.equal(1);
    expect((await storedIn(storage)).refreshTokenExpireTime).to.be.greaterThan(Date.now() + twoHours);
  });

  it("gives ten calls made with an expired access token one refresh between them, and all ten succeed", async () => {
    const { client, wire, storage, verified } = await signedIn();
    await markExpired(storage);

    const profiles = await Promise.all(Array.from({ length: 10 }, () => client.auth.getProfile({})));

    expect(profiles.map((p) => p.user?.userId)).to.deep.equal(Array(10).fill(verified.user!.userId));
    expect(wire.count("RefreshToken")).to.equal(1);
    const renewed = await storedIn(storage);
    expect(renewed.refreshToken).to.not.equal(verified.tokens!.refreshToken);
    expect(renewed).to.include({ sessionId: verified.sessionId, userId: verified.user!.userId });
    const sent = wire.requests.filter((r) => r.method === "GetProfile").map((r) => r.authorization);
    expect(new Set(sent)).to.deep.equal(new Set([`Bearer ${renewed.accessToken}`]));
  });

  it("refreshes once and retries when the server finds expired a token the client's clock thinks fresh", async () => {
    const { client, wire, storage } = await signedIn();
    const stored = await storedIn(storage);
    // Signed an hour ago by the platform's own key ring: what a client with a slow clock would still hold.
    const anHourAgo = new AccessTokens(platform.running.app!.keyRing, { issuer: "portcullis", audience: "portcullis", ttlSeconds: 60, clockToleranceSeconds: 0, verifiedCacheSize: 0 }, () => Date.now() - 3_600_000);
    const { token: expired } = await anHourAgo.issue({
      kind: "user", subject: stored.userId!, sessionId: stored.sessionId!, sessionExpiresAt: 0, deviceId: "d", kycLevel: 0, kycStatus: "", permissions: [], amr: ["otp"],
    });
    await storage.save({ ...stored, accessToken: expired });

    await client.auth.getProfile({});

    expect(wire.count("RefreshToken")).to.equal(1);
    const renewed = await storedIn(storage);
    expect(wire.requests.filter((r) => r.method === "GetProfile").map((r) => r.authorization)).to.deep.equal([`Bearer ${expired}`, `Bearer ${renewed.accessToken}`]);
  });

  it("refreshes once and retries when the server cannot verify the access token, as for one signed with a key it has let go", async () => {
    const { client, wire, ended, storage } = await signedIn();
    const retired = underRetiredKey((await storedIn(storage)).accessToken);
    await storage.save({ ...(await storedIn(storage)), accessToken: retired });

    await client.auth.getProfile({});

    expect(wire.count("RefreshToken")).to.equal(1);
    const renewed = await storedIn(storage);
    expect(wire.requests.filter((r) => r.method === "GetProfile").map((r) => r.authorization)).to.deep.equal([`Bearer ${retired}`, `Bearer ${renewed.accessToken}`]);
    expect(ended).to.deep.equal([]);
  });

  it("ends the session when the refreshed access token is refused as invalid too", async () => {
    const { client, wire, ended, storage } = await signedIn();
    wire.retiredKey.add("GetProfile");

    const error = await client.auth.getProfile({}).catch((e: unknown) => e);

    expect(error).to.be.instanceOf(SessionEndedError).and.to.include({ reason: "TOKEN_INVALID" });
    expect(wire.count("RefreshToken")).to.equal(1);
    expect(wire.count("GetProfile")).to.equal(2);
    expect(ended).to.deep.equal(["TOKEN_INVALID"]);
    expect(await storage.load()).to.equal(null);
  });

  it("gives two tabs sharing a storage and a lock one refresh between them, and the session lives on", async () => {
    const locks = sharedLocks();
    const storage = memoryStorage();
    const first = await signedIn({ storage, locks });
    const second = { wire: new Wire(), ended: [] as string[] };
    const secondClient = createPortcullisClient({ baseUrl, storage, locks, fetch: second.wire.fetch, onSessionEnd: ({ reason }) => second.ended.push(reason) });
    await markExpired(storage);

    await Promise.all([first.client.auth.getProfile({}), secondClient.auth.getProfile({})]);

    expect(first.wire.count("RefreshToken") + second.wire.count("RefreshToken")).to.equal(1);
    await Promise.all([first.client.auth.getProfile({}), secondClient.auth.getProfile({})]);
    // The chain of refresh tokens is whole: the next refresh works too.
    await markExpired(storage);
    await secondClient.sessions.getSession({});
    expect(first.wire.count("RefreshToken") + second.wire.count("RefreshToken")).to.equal(2);
    expect([...first.ended, ...second.ended]).to.deep.equal([]);
  });

  it("gives two tabs one refresh even when the refreshed pair reaches the other tab's storage late", async () => {
    const locks = sharedLocks();
    const [firstView, secondView] = laggingViews(100);
    const first = await signedIn({ storage: firstView, locks });
    const second = { wire: new Wire(), ended: [] as string[] };
    const secondClient = createPortcullisClient({ baseUrl, storage: secondView, locks, fetch: second.wire.fetch, onSessionEnd: ({ reason }) => second.ended.push(reason) });
    await markExpired(firstView);
    await sleep(150);

    await first.client.auth.getProfile({});
    await secondClient.auth.getProfile({});

    expect(first.wire.count("RefreshToken") + second.wire.count("RefreshToken")).to.equal(1);
    expect((await storedIn(secondView)).refreshToken).to.equal((await storedIn(firstView)).refreshToken);
    await markExpired(secondView);
    await secondClient.auth.getProfile({});
    expect([...first.ended, ...second.ended]).to.deep.equal([]);
  });

  it("without the shared lock the same race presents a used refresh token, and the server revokes the session", async () => {
    const storage = memoryStorage();
    const first = await signedIn({ storage });
    const secondClient = createPortcullisClient({ baseUrl, storage, locks: null });
    await markExpired(storage);

    const outcomes = await Promise.allSettled([first.client.auth.getProfile({}), secondClient.auth.getProfile({})]);

    const refused = outcomes.filter((o) => o.status === "rejected").map((o) => (o as PromiseRejectedResult).reason);
    expect(refused).to.have.length.greaterThan(0);
    expect(refused[0]).to.be.instanceOf(SessionEndedError).and.to.include({ reason: "SESSION_REVOKED" });
  });

  it("ends a session revoked from another device: SessionEndedError for every waiting call, onSessionEnd once, storage cleared", async () => {
    const phone = newPhone();
    const { client, wire, ended, storage, verified } = await signedIn({}, phone);
    const otherDevice = await signInByPhone(platform.running.grpcPort!, inbox, phone, "Laptop");
    const sessions = grpcClient(SessionService, platform.running.grpcPort!);
    const revoked = await sessions.call("revokeSession", { sessionId: verified.sessionId }, bearer(otherDevice.tokens!.accessToken));
    sessions.close();
    expect(revoked.error).to.equal(undefined);
    await refusedByServer((await storedIn(storage)).accessToken);

    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => client.auth.getProfile({})));

    for (const outcome of outcomes) {
      expect(outcome.status).to.equal("rejected");
      expect((outcome as PromiseRejectedResult).reason).to.be.instanceOf(SessionEndedError).and.to.include({ reason: "SESSION_REVOKED" });
    }
    expect(ended).to.deep.equal(["SESSION_REVOKED"]);
    expect(await storage.load()).to.equal(null);
    const sent = wire.requests.length;
    await client.auth.getProfile({}).catch(() => {});
    expect(wire.requests.length, "nothing is sent for a session that is over").to.equal(sent);
    expect(ended).to.have.length(1);
  });

  it("ends the session when the server refuses its refresh token", async () => {
    const phone = newPhone();
    const { client, wire, ended, storage, verified } = await signedIn({}, phone);
    const otherDevice = await signInByPhone(platform.running.grpcPort!, inbox, phone, "Laptop");
    const sessions = grpcClient(SessionService, platform.running.grpcPort!);
    await sessions.call("revokeSession", { sessionId: verified.sessionId }, bearer(otherDevice.tokens!.accessToken));
    sessions.close();
    await markExpired(storage);

    const outcomes = await Promise.allSettled([client.auth.getProfile({}), client.sessions.getSession({})]);

    expect(outcomes.map((o) => o.status === "rejected" && o.reason instanceof SessionEndedError)).to.deep.equal([true, true]);
    expect(wire.count("RefreshToken")).to.equal(1);
    expect(wire.count("GetProfile") + wire.count("GetSession")).to.equal(0);
    expect(ended).to.deep.equal(["SESSION_REVOKED"]);
    expect(await storage.load()).to.equal(null);
  });

  // A refresh that fails short of a refusal, offline or unanswered: the pair is kept for a later try, which works.
  const unanswered = [
    { title: "keeps the pair when a refresh fails on the network, and rejects the call", wire: "offline", code: Code.Unavailable, options: {} },
    {
      title: "gives up on a refresh that gets no answer after refreshTimeoutMs, keeping the pair, and rejects the call",
      wire: "hung",
      code: Code.DeadlineExceeded,
      // Long enough for the real refresh after it on a loaded machine: this suite's server allows no retry.
      options: { refreshTimeoutMs: 1500 },
    },
  ] as const;
  for (const failure of unanswered) {
    it(failure.title, async () => {
      const { client, wire, ended, storage } = await signedIn(failure.options);
      await markExpired(storage);
      const before = await storedIn(storage);
      wire[failure.wire].add("RefreshToken");

      const error = await client.auth.getProfile({}).catch((e: unknown) => e);

      expect(error).to.be.instanceOf(PortcullisError).and.not.to.be.instanceOf(SessionEndedError);
      expect((error as PortcullisError).code).to.equal(failure.code);
      expect(await storage.load()).to.deep.equal(before);
      expect(ended).to.deep.equal([]);

      expect(wire.count("RefreshToken"), "tried, and asked once more at once").to.equal(2);
      wire[failure.wire].clear();
      await client.auth.getProfile({});
      expect(wire.count("RefreshToken")).to.equal(3);
    });
  }

  it("asks again at once when a refresh's answer is lost, and keeps the session: within its reuse interval the server gives the same successor", async () => {
    const graceful = await startPlatform({ ...(await sharedStores()), SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: platform.env.SMS_WEBHOOK_URL!, RATE_LIMITS: rateLimits });
    try {
      const { client, wire, ended, storage } = await signedIn({ baseUrl: `http://127.0.0.1:${graceful.httpPort}`, refreshTimeoutMs: 1500 });
      await markExpired(storage);
      wire.lost.add("RefreshToken");

      await client.auth.getProfile({});
      expect(wire.count("RefreshToken")).to.equal(2);

      await markExpired(storage);
      await client.auth.getProfile({});
      expect(wire.count("RefreshToken")).to.equal(3);
      expect(ended).to.deep.equal([]);
    } finally {
      await graceful.stop();
    }
  });

  it("lets a refresh settle when the lock manager refuses the mark of the used refresh token", async () => {
    const shared = sharedLocks();
    const locks: Locks = {
      request: (name, callback) => (name.startsWith("portcullis-refresh-used:") ? Promise.reject(new Error("refused")) : shared.request(name, callback)),
      query: shared.query,
    };
    const { client, wire, ended, storage } = await signedIn({ locks });
    await markExpired(storage);

    await client.auth.getProfile({});

    expect(wire.count("RefreshToken")).to.equal(1);
    expect(ended).to.deep.equal([]);
  });

  it("stores the pair of a RefreshToken the app makes itself, keeping the session's ids", async () => {
    const { client, storage, verified } = await signedIn();
    const { refreshToken } = await storedIn(storage);

    const { tokens } = await client.auth.refreshToken({ refreshToken });

    expect(await storedIn(storage)).to.include({ refreshToken: tokens!.refreshToken, accessToken: tokens!.accessToken, sessionId: verified.sessionId });
    await client.auth.getProfile({});
  });

  it("signs out: the server ends the session, the storage is cleared, and the other tab hears of it", async () => {
    const storage = memoryStorage();
    const first = await signedIn({ storage });
    const otherTab: string[] = [];
    const secondClient = createPortcullisClient({ baseUrl, storage, locks: null, onSessionEnd: ({ reason }) => otherTab.push(reason) });
    await secondClient.currentSession();
    const { accessToken } = await storedIn(storage);

    await first.client.signOut();

    expect(first.wire.requests.at(-1)).to.deep.equal({ method: "Logout", authorization: `Bearer ${accessToken}` });
    expect(await storage.load()).to.equal(null);
    expect(first.ended).to.deep.equal(["SIGNED_OUT"]);
    await until(() => otherTab.length > 0, 1000);
    expect(otherTab).to.deep.equal(["SIGNED_OUT"]);
    await refusedByServer(accessToken);
    // Signing out again, with nothing left to end, is no error and no second event.
    await first.client.signOut();
    expect(first.ended).to.deep.equal(["SIGNED_OUT"]);
  });

  it("a closed client no longer hears another tab end the session", async () => {
    const storage = memoryStorage();
    const first = await signedIn({ storage });
    const heard = { open: [] as string[], closed: [] as string[] };
    const open = createPortcullisClient({ baseUrl, storage, locks: null, onSessionEnd: ({ reason }) => heard.open.push(reason) });
    const closed = createPortcullisClient({ baseUrl, storage, locks: null, onSessionEnd: ({ reason }) => heard.closed.push(reason) });
    await Promise.all([open.currentSession(), closed.currentSession()]);

    closed.close();
    await first.client.signOut();

    await until(() => heard.open.length > 0, 1000);
    await sleep(50);
    expect(heard).to.deep.equal({ open: ["SIGNED_OUT"], closed: [] });
  });
});
