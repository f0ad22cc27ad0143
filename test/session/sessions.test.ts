import { execFile, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import type { Running } from "../../services/app/servers.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { mintUserToken, runAdmin, sharedStores, startPlatform, type SharedStores } from "../support/platform.js";
import { freePort, RedisServer, startRedisCluster } from "../support/redis-servers.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { expectNoSecretLeaked } from "../support/secrets.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { dropTestDatabases } from "../support/stores.js";
import { until } from "../support/until.js";

const run = promisify(execFile);
const inbox = new SmsInbox();
let smsUrl: string;
before(async () => {
  smsUrl = await inbox.start();
});
after(async () => {
  await inbox.stop();
  await dropTestDatabases();
});

const relaxedLimits = "otp_send_ip=1000/3600,otp_verify_ip=1000/3600,refresh_ip=1000/60,refresh_user=1000/60";
const platformEnv = (stores: SharedStores, extra: Record<string, string> = {}) => ({
  ...stores,
  SMS_PROVIDER: "webhook",
  SMS_WEBHOOK_URL: smsUrl,
  RATE_LIMITS: `${relaxedLimits},otp_send_phone=10/3600`,
  ...extra,
});

/** Polls until the call is refused; revocation is asynchronous across instances. */
async function refusedWithin(ms: number, call: () => Promise<{ error?: grpc.ServiceError }>) {
  const deadline = Date.now() + ms;
  for (;;) {
    const { error } = await call();
    if (error) return error;
    if (Date.now() > deadline) throw new Error(`still accepted after ${ms} ms`);
    await sleep(10);
  }
}

describe("Sessions on two instances sharing one database and Redis", () => {
  let a: Running;
  let b: Running;
  let stores: SharedStores;
  let db: pg.Client;
  const logLines: string[] = [];
  const secrets: string[] = [];

  before(async () => {
    stores = await sharedStores();
    const env = platformEnv(stores, { SESSION_LIMIT_PER_USER: "3", REFRESH_REUSE_INTERVAL: "10" });
    a = await startPlatform(env, logLines);
    b = await startPlatform(env, logLines);
    db = new pg.Client({ connectionString: stores.DATABASE_URL });
    await db.connect();
  });
  after(async () => {
    await expectNoSecretLeaked(db, logLines, secrets);
    await db.end();
    await a.stop();
    await b.stop();
  });

  /** Signs a new number in on instance a, keeping its code and tokens to check that none reaches a log line or an audit row. */
  async function signIn(phone = newPhone()) {
    const signedIn = (await signInByPhone(a.grpcPort!, inbox, phone))!;
    secrets.push(inbox.codeFor(phone), signedIn.tokens!.accessToken, signedIn.tokens!.refreshToken);
    return signedIn;
  }

  describe("device sessions", () => {
    it("lists both devices, revokes the other one, and that device is refused on the other instance within a second", async () => {
      const phone = newPhone();
      const laptop = (await signInByPhone(a.grpcPort!, inbox, phone, "Laptop"))!;
      const phoneDevice = (await signInByPhone(b.grpcPort!, inbox, phone, "Phone"))!;
      const sessionsOnA = grpcClient(SessionService, a.grpcPort!);
      const authOnB = grpcClient(AuthService, b.grpcPort!);

      const { response } = await sessionsOnA.call("listSessions", {}, bearer(laptop.tokens!.accessToken));
      expect(response!.sessions.map((s) => [s.device?.deviceName, s.current])).to.deep.equal([
        ["Phone", false],
        ["Laptop", true],
      ]);
      expect(response!.sessions[0]).to.deep.include({ ipAddress: "127.0.0.1", userId: laptop.user!.userId });

      expect((await authOnB.call("getProfile", {}, bearer(phoneDevice.tokens!.accessToken))).error).to.equal(undefined);
      const revoked = await sessionsOnA.call("revokeSession", { sessionId: phoneDevice.sessionId }, bearer(laptop.tokens!.accessToken));
      expect(revoked.error).to.equal(undefined);

      const refused = await refusedWithin(1000, () => authOnB.call("getProfile", {}, bearer(phoneDevice.tokens!.accessToken)));
      expect(detailOf(grpcErrorDetails(refused), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
      const refresh = await authOnB.call("refreshToken", { refreshToken: phoneDevice.tokens!.refreshToken });
      expect(refresh.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect((await authOnB.call("getProfile", {}, bearer(laptop.tokens!.accessToken))).error, "the laptop stays signed in").to.equal(undefined);
      sessionsOnA.close();
      authOnB.close();
    });

    it("does the same through the gateway", async () => {
      const phone = newPhone();
      const laptop = (await signInByPhone(a.grpcPort!, inbox, phone, "Laptop"))!;
      const other = (await signInByPhone(b.grpcPort!, inbox, phone, "Tablet"))!;
      const list = await connectCall(a.httpPort!, "/portcullis.v1.SessionService/ListSessions", {}, bearer(laptop.tokens!.accessToken));
      expect(list.json.sessions).to.have.length(2);
      const revoke = await connectCall(a.httpPort!, "/portcullis.v1.SessionService/RevokeSession", { sessionId: other.sessionId }, bearer(laptop.tokens!.accessToken));
      expect(revoke.status).to.equal(200);
      const deadline = Date.now() + 1000;
      let status = 200;
      while (status === 200 && Date.now() < deadline) {
        status = (await connectCall(b.httpPort!, "/portcullis.v1.AuthService/GetProfile", {}, bearer(other.tokens!.accessToken))).status;
      }
      expect(status).to.equal(401);
      const refresh = await connectCall(b.httpPort!, "/portcullis.v1.AuthService/RefreshToken", { refreshToken: other.tokens!.refreshToken });
      expect(refresh.status).to.equal(401);
    });

    it("counts sign-ins on both instances toward one limit, evicting the oldest session", async () => {
      const phone = newPhone();
      const first = (await signInByPhone(a.grpcPort!, inbox, phone, "First"))!;
      await signInByPhone(b.grpcPort!, inbox, phone, "Second");
      await signInByPhone(a.grpcPort!, inbox, phone, "Third");
      const fourth = (await signInByPhone(b.grpcPort!, inbox, phone, "Fourth"))!;
      const authOnA = grpcClient(AuthService, a.grpcPort!);
      await refusedWithin(1000, () => authOnA.call("getProfile", {}, bearer(first.tokens!.accessToken)));
      const list = await grpcClient(SessionService, a.grpcPort!).call("listSessions", {}, bearer(fourth.tokens!.accessToken));
      expect(list.response!.sessions.map((s) => s.device?.deviceName)).to.deep.equal(["Fourth", "Third", "Second"]);
      authOnA.close();
    });

    it("pages through the sessions, newest first, and rejects a forged page token", async () => {
      const phone = newPhone();
      await signInByPhone(a.grpcPort!, inbox, phone, "Older");
      const newer = (await signInByPhone(b.grpcPort!, inbox, phone, "Newer"))!;
      const sessions = grpcClient(SessionService, a.grpcPort!);
      const first = await sessions.call("listSessions", { pageSize: 1 }, bearer(newer.tokens!.accessToken));
      expect(first.response!.sessions.map((s) => s.device?.deviceName)).to.deep.equal(["Newer"]);
      const second = await sessions.call("listSessions", { pageSize: 1, pageToken: first.response!.nextPageToken }, bearer(newer.tokens!.accessToken));
      expect(second.response!.sessions.map((s) => s.device?.deviceName)).to.deep.equal(["Older"]);
      expect(second.response!.nextPageToken).to.equal("");
      const forged = await sessions.call("listSessions", { pageToken: "bm9wZQ" }, bearer(newer.tokens!.accessToken));
      expect(forged.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      sessions.close();
    });

    it("refuses to revoke another user's session, as if it did not exist", async () => {
      const mine = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
      const theirs = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
      const sessions = grpcClient(SessionService, a.grpcPort!);
      const { error } = await sessions.call("revokeSession", { sessionId: theirs.sessionId }, bearer(mine.tokens!.accessToken));
      expect(error?.code).to.equal(grpc.status.NOT_FOUND);
      expect((await sessions.call("getSession", {}, bearer(theirs.tokens!.accessToken))).error).to.equal(undefined);
      sessions.close();
    });

    it("revokes all sessions but the current one", async () => {
      const phone = newPhone();
      await signInByPhone(a.grpcPort!, inbox, phone, "One");
      await signInByPhone(b.grpcPort!, inbox, phone, "Two");
      const current = (await signInByPhone(a.grpcPort!, inbox, phone, "Three"))!;
      const sessions = grpcClient(SessionService, b.grpcPort!);
      const { response } = await sessions.call("revokeAllSessions", { keepCurrent: true }, bearer(current.tokens!.accessToken));
      expect(response?.revokedSessionCount).to.equal(2);
      const list = await sessions.call("listSessions", {}, bearer(current.tokens!.accessToken));
      expect(list.response!.sessions.map((s) => s.sessionId)).to.deep.equal([current.sessionId]);
      sessions.close();
    });
  });

  describe("refresh-token rotation", () => {
    let auth: ReturnType<typeof grpcClient<typeof AuthService>>;
    before(() => {
      auth = grpcClient(AuthService, a.grpcPort!);
    });
    after(() => auth.close());

    it("gives 20 concurrent refreshes of one token exactly one successor, and revokes nothing", async () => {
      const signedIn = await signIn();
      const results = await Promise.all(
        Array.from({ length: 20 }, () => auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken })),
      );
      const successors = new Set(results.map((r) => r.response?.tokens?.refreshToken).filter(Boolean));
      expect(results.every((r) => r.response), results.find((r) => r.error)?.error?.message).to.equal(true);
      expect(successors.size).to.equal(1);
      const stored = await db.query(
        "select count(*)::int as n from refresh_token rt join session s on s.id = rt.session_id where s.id = $1 and s.revoke_time is null",
        [signedIn.sessionId],
      );
      expect(stored.rows[0].n, "the original and its one successor").to.equal(2);
      const [successor] = successors;
      secrets.push(successor!);
      expect((await auth.call("refreshToken", { refreshToken: successor! })).error).to.equal(undefined);
    });

    it("rotates many sessions' tokens at once, each with its own successor and an audit row carrying its own request", async () => {
      const signedIn = await Promise.all(Array.from({ length: 12 }, () => signIn()));
      const results = await Promise.all(
        signedIn.map((s, i) => auth.call("refreshToken", { refreshToken: s.tokens!.refreshToken }, { "x-request-id": `batch-${i}` })),
      );
      const successors = results.map((r) => r.response?.tokens?.refreshToken);
      expect(successors.every(Boolean), results.find((r) => r.error)?.error?.message).to.equal(true);
      expect(new Set(successors).size).to.equal(signedIn.length);
      secrets.push(...(successors as string[]));
      const audited = await db.query<{ request_id: string; session_id: string }>(
        "select request_id, session_id::text from audit_event where event = 'token.refresh' and request_id like $1",
        ["batch-%"],
      );
      expect(audited.rows.map((row) => `${row.request_id} ${row.session_id}`).sort()).to.deep.equal(
        signedIn.map((s, i) => `batch-${i} ${s.sessionId}`).sort(),
      );
      const next = await Promise.all(successors.map((refreshToken) => auth.call("refreshToken", { refreshToken: refreshToken! })));
      expect(next.every((r) => r.response), "every successor refreshes in turn").to.equal(true);
    });

    it("revokes the session when a used token comes back after the reuse interval", async () => {
      const signedIn = await signIn();
      const first = await auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken });
      // As if the 10-s reuse interval had passed.
      await db.query("update refresh_token set use_time = use_time - interval '1 minute' where session_id = $1 and use_time is not null", [signedIn.sessionId]);
      const replay = await auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken });
      expect(replay.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(replay.error!), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
      const successorRefused = await auth.call("refreshToken", { refreshToken: first.response!.tokens!.refreshToken });
      expect(successorRefused.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      const accessRefused = await auth.call("getProfile", {}, bearer(first.response!.tokens!.accessToken));
      expect(accessRefused.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      const audited = await db.query("select count(*)::int as n from audit_event where event = 'token.reuse_detected' and session_id = $1", [signedIn.sessionId]);
      expect(audited.rows[0].n).to.equal(1);
    });

    it("returns the same successor to a retry only until that successor is used; then the old token revokes the session", async () => {
      const signedIn = await signIn();
      const original = signedIn.tokens!.refreshToken;
      // Back to back, well inside the 10 s reuse interval.
      const first = await auth.call("refreshToken", { refreshToken: original });
      const retry = await auth.call("refreshToken", { refreshToken: original });
      expect(retry.response?.tokens?.refreshToken, "a retry before the successor is used").to.equal(first.response!.tokens!.refreshToken);
      const second = await auth.call("refreshToken", { refreshToken: first.response!.tokens!.refreshToken });
      expect(second.error).to.equal(undefined);
      secrets.push(first.response!.tokens!.refreshToken, second.response!.tokens!.refreshToken, second.response!.tokens!.accessToken);

      const replay = await auth.call("refreshToken", { refreshToken: original });
      expect(replay.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(replay.error!), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
      const latest = await auth.call("refreshToken", { refreshToken: second.response!.tokens!.refreshToken });
      expect(latest.error?.code, "the successor's successor").to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(latest.error!), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
      const session = await db.query("select revoke_reason from session where id = $1", [signedIn.sessionId]);
      expect(session.rows[0].revoke_reason).to.equal("refresh_token_reused");
    });
  });

  describe("disabling an account with the admin tool (npm run admin -- disable)", () => {
    it("signs out the account's sessions: the other instance refuses them within a second, and their refresh token is refused", async () => {
      const phone = newPhone();
      const user = await signIn(phone);
      expect((await runAdmin(stores, "disable", phone)).stdout).to.match(/disabled; 1 session/);
      const authOnB = grpcClient(AuthService, b.grpcPort!);
      const deadline = Date.now() + 1000;
      let error: grpc.ServiceError | undefined;
      while (!error && Date.now() < deadline) error = (await authOnB.call("getProfile", {}, bearer(user.tokens!.accessToken))).error;
      expect(error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      authOnB.close();
      const authOnA = grpcClient(AuthService, a.grpcPort!);
      const refused = await authOnA.call("refreshToken", { refreshToken: user.tokens!.refreshToken });
      expect(refused.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      authOnA.close();
    });

    it("refuses a refresh for an account disabled while its session was not yet revoked", async () => {
      // The race the admin tool's transaction can lose: disable_time is set, the session is still live.
      const signedIn = await signIn();
      await db.query("update app_user set disable_time = now() where id = $1", [signedIn.user!.userId]);
      const auth = grpcClient(AuthService, a.grpcPort!);
      const refused = await auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken });
      expect(refused.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      const stored = await db.query(
        "select count(*)::int as n from refresh_token rt join session s on s.id = rt.session_id where s.id = $1 and s.revoke_time is null",
        [signedIn.sessionId],
      );
      expect(stored.rows[0].n, "no successor was stored for the live session").to.equal(1);
      auth.close();
    });

    it("still signs the sessions out on every instance when Redis will not take its message, and warns the operator", async () => {
      // A Redis that connects and stores but refuses PUBLISH.
      const port = await freePort();
      const mute = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--rename-command", "PUBLISH", ""], {
        stdio: "ignore",
      });
      try {
        const phone = newPhone();
        const signedIn = (await signInByPhone(a.grpcPort!, inbox, phone))!;
        await until(async () => (await run("redis-cli", ["-p", String(port), "ping"]).catch(() => ({ stdout: "" }))).stdout.trim() === "PONG");
        const { stdout, stderr } = await runAdmin({ ...stores, REDIS_URL: `redis://127.0.0.1:${port}` }, "disable", phone);
        expect(stdout).to.match(/disabled; 1 session/);
        expect(stderr).to.match(/warning: could not tell running instances through Redis within 5 s/);
        expect(stderr).to.match(/from Postgres within about a second/);
        const auth = grpcClient(AuthService, b.grpcPort!);
        await refusedWithin(5000, () => auth.call("getProfile", {}, bearer(signedIn.tokens!.accessToken)));
        auth.close();
      } finally {
        mute.kill("SIGKILL");
      }
    });

    it("disables the account in Postgres when Redis cannot be reached at all: it warns, exits 0, and instances still sign the sessions out", async () => {
      const phone = newPhone();
      const signedIn = await signIn(phone);
      const closedPort = await freePort();
      const { stdout, stderr } = await runAdmin({ ...stores, REDIS_URL: `redis://127.0.0.1:${closedPort}` }, "disable", phone);
      expect(stdout).to.match(/disabled; 1 session/);
      expect(stderr).to.match(/warning: could not reach Redis/);
      expect(stderr).to.match(/from Postgres within about a second/);
      const disabled = await db.query("select disable_time from app_user where id = $1", [signedIn.user!.userId]);
      expect(disabled.rows[0].disable_time).to.be.instanceOf(Date);
      const auth = grpcClient(AuthService, b.grpcPort!);
      await refusedWithin(5000, () => auth.call("getProfile", {}, bearer(signedIn.tokens!.accessToken)));
      auth.close();
    });
  });
});

describe("Session lifetimes and cleanup", () => {
  let running: Running;
  let db: pg.Client;

  before(async () => {
    const stores = await sharedStores();
    running = await startPlatform(platformEnv(stores));
    db = new pg.Client({ connectionString: stores.DATABASE_URL });
    await db.connect();
  });
  after(async () => {
    await db.end();
    await running.stop();
  });

  it("refuses to refresh a session that has been idle too long or has reached its absolute lifetime", async () => {
    const auth = grpcClient(AuthService, running.grpcPort!);
    const idle = (await signInByPhone(running.grpcPort!, inbox, newPhone()))!;
    await db.query("update session set idle_expire_time = now() - interval '1 second' where id = $1", [idle.sessionId]);
    expect((await auth.call("refreshToken", { refreshToken: idle.tokens!.refreshToken })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);

    const old = (await signInByPhone(running.grpcPort!, inbox, newPhone()))!;
    await db.query("update session set expire_time = now() - interval '1 second' where id = $1", [old.sessionId]);
    expect((await auth.call("refreshToken", { refreshToken: old.tokens!.refreshToken })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    auth.close();
  });

  it("refuses an access token whose session has passed its absolute expiry, on every call", async () => {
    const token = await running.app!.tokens.issue({
      kind: "user", subject: crypto.randomUUID(), sessionId: crypto.randomUUID(), sessionExpiresAt: Math.floor(Date.now() / 1000) - 1,
      deviceId: "d", kycLevel: 0, kycStatus: "", permissions: [], amr: ["otp"],
    });
    const { error } = await grpcClient(SessionService, running.grpcPort!).call("getSession", {}, bearer(token.token));
    expect(error?.code).to.equal(grpc.status.UNAUTHENTICATED);
  });

  it("records activity in batches, not on every call", async () => {
    const signedIn = (await signInByPhone(running.grpcPort!, inbox, newPhone()))!;
    await db.query("update session set last_active_time = now() - interval '1 hour' where id = $1", [signedIn.sessionId]);
    const sessions = grpcClient(SessionService, running.grpcPort!);
    await sessions.call("getSession", {}, bearer(signedIn.tokens!.accessToken));
    const before = await db.query("select last_active_time < now() - interval '59 minutes' as stale from session where id = $1", [signedIn.sessionId]);
    expect(before.rows[0].stale, "no write on the call itself").to.equal(true);
    await running.app!.sessionGuard.flush();
    const after = await db.query("select last_active_time > now() - interval '1 minute' as fresh from session where id = $1", [signedIn.sessionId]);
    expect(after.rows[0].fresh).to.equal(true);
    sessions.close();
  });

  it("cleans up ended sessions and closed codes, and leaves live rows alone", async () => {
    const live = (await signInByPhone(running.grpcPort!, inbox, newPhone()))!;
    const ended = (await signInByPhone(running.grpcPort!, inbox, newPhone()))!;
    await db.query("update session set expire_time = now() - interval '1 second' where id = $1", [ended.sessionId]);
    const openPhone = newPhone();
    await grpcClient(AuthService, running.grpcPort!).call("sendOtp", { phoneNumber: openPhone });

    const removed = await running.app!.cleanup.run();
    expect(removed.sessions).to.be.greaterThan(0);
    const sessions = await db.query("select id from session where id = any($1)", [[live.sessionId, ended.sessionId]]);
    expect(sessions.rows.map((r) => r.id)).to.deep.equal([live.sessionId]);
    const tokens = await db.query("select count(*)::int as n from refresh_token where session_id = $1", [ended.sessionId]);
    expect(tokens.rows[0].n).to.equal(0);
    const open = await db.query("select count(*)::int as n from otp_challenge where phone_number = $1", [openPhone]);
    expect(open.rows[0].n, "an open code survives").to.equal(1);
    const closed = await db.query("select count(*)::int as n from otp_challenge where close_time is not null");
    expect(closed.rows[0].n).to.equal(0);
  });
});

describe("Revocation when Redis restarts", () => {
  it("fails closed while Redis is down (open for capacity limits) and accepts no revoked session afterwards", async () => {
    const redis = new RedisServer(await freePort());
    await redis.start();
    const stores = { ...(await sharedStores()), REDIS_URL: redis.url };
    const [a, b] = [await startPlatform(platformEnv(stores)), await startPlatform(platformEnv(stores))];
    try {
      const phone = newPhone();
      const first = (await signInByPhone(a.grpcPort!, inbox, phone, "Laptop"))!;
      const second = (await signInByPhone(a.grpcPort!, inbox, phone, "Phone"))!;
      const sessionsOnA = grpcClient(SessionService, a.grpcPort!);
      const authOnB = grpcClient(AuthService, b.grpcPort!);
      await sessionsOnA.call("revokeSession", { sessionId: second.sessionId }, bearer(first.tokens!.accessToken));
      await refusedWithin(1000, () => authOnB.call("getProfile", {}, bearer(second.tokens!.accessToken)));

      await redis.stop();
      const whileDown = await authOnB.call("getProfile", {}, bearer(first.tokens!.accessToken));
      expect(whileDown.error?.code, "fails closed while the feed is lost").to.equal(grpc.status.UNAVAILABLE);
      const codeWhileDown = await authOnB.call("sendOtp", { phoneNumber: newPhone() });
      expect(codeWhileDown.error?.code, "credential limits fail closed").to.equal(grpc.status.UNAVAILABLE);
      expect((await authOnB.call("getJwks", {})).error, "capacity limits fail open").to.equal(undefined);
      await redis.start(); // empty: it keeps nothing on disk

      const deadline = Date.now() + 10_000;
      while ((await authOnB.call("getProfile", {}, bearer(first.tokens!.accessToken))).error && Date.now() < deadline) await sleep(100);
      expect((await authOnB.call("getProfile", {}, bearer(first.tokens!.accessToken))).error, "back after catching up").to.equal(undefined);
      const revoked = await authOnB.call("getProfile", {}, bearer(second.tokens!.accessToken));
      expect(detailOf(grpcErrorDetails(revoked.error!), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
      sessionsOnA.close();
      authOnB.close();
    } finally {
      await a.stop();
      await b.stop();
      await redis.destroy();
    }
  });
});

describe("Revocation when pub/sub loses the message", () => {
  let a: Running;
  let b: Running;
  let stores: SharedStores;
  let db: pg.Client;

  before(async () => {
    stores = await sharedStores();
    const env = platformEnv(stores, { RATE_LIMITS: `${relaxedLimits},kyc_submit_user=1000/86400` });
    [a, b] = [await startPlatform(env), await startPlatform(env)];
    db = new pg.Client({ connectionString: stores.DATABASE_URL });
    await db.connect();
  });
  after(async () => {
    await db.end();
    await a.stop();
    await b.stop();
  });

  it("refuses on every instance a session revoked in Postgres and never published", async () => {
    const signedIn = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
    const clients = [grpcClient(AuthService, a.grpcPort!), grpcClient(AuthService, b.grpcPort!)];
    expect((await clients[1]!.call("getProfile", {}, bearer(signedIn.tokens!.accessToken))).error).to.equal(undefined);
    await db.query("update session set revoke_time = now(), revoke_reason = 'revoked_by_admin' where id = $1", [signedIn.sessionId]);
    for (const client of clients) {
      const refused = await refusedWithin(5000, () => client.call("getProfile", {}, bearer(signedIn.tokens!.accessToken)));
      expect(detailOf(grpcErrorDetails(refused), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
    }
    clients.forEach((c) => c.close());
  });

  it("caps a KYC level lowered in Postgres and never published, even for a token signed just after the lowering began", async () => {
    const signedIn = (await signInByPhone(a.grpcPort!, inbox, newPhone()))!;
    // As a refresh would have issued it, having read level 1 before the lowering committed.
    const { token } = await mintUserToken(b, { subject: signedIn.user!.userId, kycLevel: 1 });
    const kyc = grpcClient(KycService, b.grpcPort!);
    const before = await kyc.call("submitDocumentKyc", {}, bearer(token));
    expect(before.error?.code, "level 1 gets past the chain").to.not.equal(grpc.status.PERMISSION_DENIED);
    await db.query("update app_user set kyc_level = 0, kyc_lower_time = now() - interval '3 seconds' where id = $1", [signedIn.user!.userId]);
    const refused = await refusedWithin(5000, async () => {
      const { error } = await kyc.call("submitDocumentKyc", {}, bearer(token));
      return { error: error?.code === grpc.status.PERMISSION_DENIED ? error : undefined };
    });
    expect(detailOf(grpcErrorDetails(refused), ErrorInfoSchema)?.metadata).to.deep.equal({ required_level: "1", current_level: "0" });
    kyc.close();
  });
});

describe("On a 3-node Redis Cluster", () => {
  it("shares rate limits and revocations between instances", async () => {
    const cluster = await startRedisCluster();
    const stores = { ...(await sharedStores()), REDIS_URL: cluster.url, REDIS_CLUSTER: "true" };
    const env = platformEnv(stores, { RATE_LIMITS: `${relaxedLimits},otp_send_phone=3/3600` });
    const [a, b] = [await startPlatform(env), await startPlatform(env)];
    try {
      const phone = newPhone();
      const clients = [grpcClient(AuthService, a.grpcPort!), grpcClient(AuthService, b.grpcPort!)];
      await signInByPhone(a.grpcPort!, inbox, phone, "Laptop");
      const second = (await signInByPhone(b.grpcPort!, inbox, phone, "Phone"))!;
      // otp_send_phone allows 3 an hour: two were spent signing in.
      expect((await clients[0]!.call("sendOtp", { phoneNumber: phone })).error).to.equal(undefined);
      expect((await clients[1]!.call("sendOtp", { phoneNumber: phone })).error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);

      expect((await clients[1]!.call("logout", {}, bearer(second.tokens!.accessToken))).error).to.equal(undefined);
      await refusedWithin(1000, () => clients[0]!.call("getProfile", {}, bearer(second.tokens!.accessToken)));
      clients.forEach((c) => c.close());
    } finally {
      await a.stop();
      await b.stop();
      await cluster.stop();
    }
  });
});
