import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";
import { connectCall, fieldsOf, grpcClient, reasonOf } from "../support/clients.js";
import { runAdmin, startPlatform } from "../support/platform.js";
import { expectNoSecretLeaked } from "../support/secrets.js";
import { claimsOf, createServiceAccount, serviceToken } from "../support/service-accounts.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

/** The same token with one character of its payload changed: its signature no longer matches. */
const tampered = (token: string) => {
  const [header, payload, signature] = token.split(".");
  const i = Math.floor(payload!.length / 2);
  return `${header}.${payload!.slice(0, i)}${payload![i] === "A" ? "B" : "A"}${payload!.slice(i + 1)}.${signature}`;
};

/**
 * A checkout service acting for a signed-in user: it exchanges the user's
 * token for one bound to the orders service, which can pass it on to
 * payments; any service can ask whether a token is still good.
 */
describe("Token exchange and introspection (TokenService)", () => {
  const sms = new SmsInbox();
  const secrets: string[] = [];
  const platform = platformForSuite({
    inboxes: [sms],
    logs: true,
    // Every test signs someone in from the one loopback address.
    env: { RATE_LIMITS: "otp_send_ip=1000/3600,otp_verify_ip=1000/3600" },
  });
  const tokens = platform.client(TokenService);
  const auth = platform.client(AuthService);
  /** Service tokens for Portcullis (to call TokenService), by service. */
  let checkout: string;
  let orders: string;
  /** Disabled by one of the tests each. */
  let reports: string;
  let archive: string;
  let relay: string;

  const signIn = async () => {
    const { tokens: issued } = await signInByPhone(platform.running.grpcPort!, sms, newPhone());
    secrets.push(issued!.accessToken, issued!.refreshToken);
    return issued!.accessToken;
  };
  const exchange = async (caller: string, subjectToken: string, audience: string) => {
    const answer = await tokens.call("exchangeToken", { subjectToken, audience }, bearer(caller));
    if (answer.response) secrets.push(answer.response.accessToken);
    return answer;
  };
  const introspect = async (token: string, caller = orders) => {
    const answer = await tokens.call("introspectToken", { token }, bearer(caller));
    if (answer.error) throw answer.error;
    return answer.response;
  };
  const auditRows = async (event: string) =>
    (await platform.db.query("select outcome, user_id, session_id, detail from audit_event where event = $1 order by id", [event])).rows;

  before(async function () {
    // The admin tool starts as its own process, a few seconds each time.
    this.timeout(90_000);
    const [checkoutSecret, ordersSecret, reportsSecret, archiveSecret, relaySecret] = await Promise.all([
      createServiceAccount(platform.stores, "checkout", ["portcullis", "orders"]),
      createServiceAccount(platform.stores, "orders", ["portcullis", "payments"]),
      createServiceAccount(platform.stores, "reports", ["portcullis"]),
      createServiceAccount(platform.stores, "archive", ["portcullis"]),
      createServiceAccount(platform.stores, "relay", ["portcullis", "orders"]),
    ]);
    secrets.push(checkoutSecret, ordersSecret, reportsSecret, archiveSecret, relaySecret);
    reports = await serviceToken(platform.running.grpcPort!, "reports", reportsSecret, "portcullis");
    checkout = await serviceToken(platform.running.grpcPort!, "checkout", checkoutSecret, "portcullis");
    orders = await serviceToken(platform.running.grpcPort!, "orders", ordersSecret, "portcullis");
    archive = await serviceToken(platform.running.grpcPort!, "archive", archiveSecret, "portcullis");
    relay = await serviceToken(platform.running.grpcPort!, "relay", relaySecret, "portcullis");
    secrets.push(checkout, orders, reports, archive, relay);
  });

  describe("ExchangeToken", () => {
    it("binds the user's token to the target service: same user, session and KYC level, the caller in act, never outliving it", async () => {
      const userToken = await signIn();
      const { response, error } = await exchange(checkout, userToken, "orders");
      expect(error).to.equal(undefined);
      expect(response!.tokenType).to.equal("Bearer");
      expect(response!.issuedTokenType).to.equal("urn:ietf:params:oauth:token-type:access_token");
      const user = claimsOf(userToken);
      const exchanged = claimsOf(response!.accessToken);
      expect(exchanged).to.include({ sub: user.sub, sid: user.sid, aud: "orders", iss: user.iss, kyc_lvl: user.kyc_lvl, did: user.did });
      expect(exchanged.act).to.deep.equal({ sub: "checkout" });
      expect(exchanged.amr).to.deep.equal(user.amr);
      expect(exchanged.svc).to.equal(undefined);
      expect(exchanged.exp).to.be.at.most(user.exp);
      expect(exchanged.exp - exchanged.iat).to.be.at.most(300);
      expect(response!.expiresIn).to.be.within(1, 300);

      // Both token ids, so the audit log ties the new token to the one it came from.
      const [row] = (await auditRows("token.exchange")).filter((r) => r.outcome === "success");
      expect(row).to.deep.include({
        user_id: user.sub,
        session_id: user.sid,
        detail: { client_id: "checkout", audience: "orders", jti: exchanged.jti, subject_jti: user.jti },
      });
    });

    it("answers the same at the Connect gateway", async () => {
      const answer = await connectCall(
        platform.running.httpPort!,
        "/portcullis.v1.TokenService/ExchangeToken",
        { subjectToken: await signIn(), audience: "orders" },
        bearer(checkout),
      );
      expect(answer.status).to.equal(200);
      secrets.push(answer.json.accessToken);
      expect(claimsOf(answer.json.accessToken)).to.include({ aud: "orders" });
    });

    it("gives a token that Portcullis itself refuses: it is bound to the target", async () => {
      const { response } = await exchange(checkout, await signIn(), "orders");
      const profile = await auth.call("getProfile", {}, bearer(response!.accessToken));
      expect(profile.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    });

    it("lets the target pass it on to a service it may reach (A → B → C), keeping the earlier actor nested, but not back to the first caller", async () => {
      const { response: forOrders } = await exchange(checkout, await signIn(), "orders");
      const { response: forPayments, error } = await exchange(orders, forOrders!.accessToken, "payments");
      expect(error).to.equal(undefined);
      expect(claimsOf(forPayments!.accessToken)).to.deep.include({
        aud: "payments",
        act: { sub: "orders", act: { sub: "checkout" } },
        sid: claimsOf(forOrders!.accessToken).sid,
      });
      // Introspection names the immediate actor.
      expect(await introspect(forPayments!.accessToken)).to.deep.include({ active: true, actSub: "orders" });

      // A token bound to orders is not checkout's to exchange.
      const refused = await exchange(checkout, forOrders!.accessToken, "orders");
      expect(refused.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(refused.error!)).to.deep.equal(["subject_token"]);
    });

    it("refuses an audience the calling service may not reach with AUDIENCE_NOT_ALLOWED, and audits the refusal", async () => {
      const userToken = await signIn();
      for (const audience of ["payments", "portcullis"]) {
        const { error } = await exchange(checkout, userToken, audience);
        expect(error?.code, audience).to.equal(grpc.status.PERMISSION_DENIED);
        expect(reasonOf(error!), audience).to.equal("AUDIENCE_NOT_ALLOWED");
      }
      const denied = (await auditRows("token.exchange")).filter((r) => r.outcome === "denied" && r.detail.reason === "audience_not_allowed");
      expect(denied.map((r) => r.detail.audience)).to.include.members(["payments", "portcullis"]);
      expect(denied[0].user_id).to.equal(claimsOf(userToken).sub);
    });

    it("refuses a subject token that is not a good user token: INVALID_ARGUMENT on subject_token", async () => {
      const userToken = await signIn();
      for (const [what, subjectToken] of [
        ["tampered", tampered(userToken)],
        ["not a JWT", "not-a-token"],
        ["a service token", orders],
      ] as const) {
        const { error } = await exchange(checkout, subjectToken, "orders");
        expect(error?.code, what).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(error!), what).to.deep.equal(["subject_token"]);
      }
    });

    it("is for services: a user token as the caller is refused", async () => {
      const userToken = await signIn();
      const { error } = await exchange(userToken, userToken, "orders");
      expect(error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(reasonOf(error!)).to.equal("WRONG_CALLER");
    });

    it("cannot exchange the token of a session that has been signed out", async () => {
      const userToken = await signIn();
      expect((await auth.call("logout", {}, bearer(userToken))).error).to.equal(undefined);
      const { error } = await exchange(checkout, userToken, "orders");
      expect(error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(error!)).to.deep.equal(["subject_token"]);
      const denied = (await auditRows("token.exchange")).filter((r) => r.detail.reason === "session_revoked");
      expect(denied).to.have.length(1);
      expect(denied[0]).to.deep.include({ outcome: "denied", session_id: claimsOf(userToken).sid });
    });
  });

  describe("IntrospectToken", () => {
    it("describes a good user token, a service token and an exchanged one", async () => {
      const userToken = await signIn();
      const user = claimsOf(userToken);
      const asUser = await introspect(userToken);
      expect(asUser).to.deep.include({ active: true, sub: user.sub, sid: user.sid, aud: "portcullis", iss: user.iss, kycLvl: user.kyc_lvl, svc: false, jti: user.jti, actSub: "" });
      expect(asUser.exp).to.equal(BigInt(user.exp));
      expect(asUser.iat).to.equal(BigInt(user.iat));
      expect(asUser.amr).to.deep.equal(user.amr);

      const asService = await introspect(checkout);
      expect(asService).to.deep.include({ active: true, sub: "checkout", sid: "", aud: "portcullis", svc: true });

      const { response } = await exchange(checkout, userToken, "orders");
      const asExchanged = await introspect(response!.accessToken);
      expect(asExchanged).to.deep.include({ active: true, sub: user.sub, sid: user.sid, aud: "orders", actSub: "checkout", svc: false });
    });

    it("answers only active: false for a token that is not good, never an error", async () => {
      const userToken = await signIn();
      const expired = await platform.running.app!.tokens.issue(
        { kind: "user", subject: claimsOf(userToken).sub, sessionId: claimsOf(userToken).sid, sessionExpiresAt: 0, deviceId: "", kycLevel: 0, kycStatus: "", permissions: [], amr: [] },
        { notAfter: Math.floor(Date.now() / 1000) - 60 },
      );
      for (const [what, token] of [
        ["expired", expired.token],
        ["tampered", tampered(userToken)],
        ["malformed", "a.b.c"],
        ["not a JWT", "hello"],
      ] as const) {
        const answer = await introspect(token);
        expect(answer.active, what).to.equal(false);
        expect(answer.sub, what).to.equal("");
      }
    });

    it("says active: false for a token past its exp by Portcullis's own clock, though within the tolerance given to other clocks", async () => {
      const user = claimsOf(await signIn());
      // A second past its exp: inside the verifier's clock tolerance (JWT_CLOCK_TOLERANCE_SECONDS, 5 s).
      const { token } = await platform.running.app!.tokens.issue(
        { kind: "user", subject: user.sub, sessionId: user.sid, sessionExpiresAt: 0, deviceId: "", kycLevel: 0, kycStatus: "", permissions: [], amr: [] },
        { notAfter: Math.floor(Date.now() / 1000) - 1 },
      );
      secrets.push(token);
      expect(await introspect(token)).to.deep.include({ active: false, sub: "" });
    });

    it("says active: false to a service for a token meant for neither it, one of its audiences, nor Portcullis (RFC 7662 §4)", async () => {
      const userToken = await signIn();
      const { response: forOrders } = await exchange(checkout, userToken, "orders");
      const { response: forPayments } = await exchange(orders, forOrders!.accessToken, "payments");
      // orders is its own name; payments is among its audiences.
      expect((await introspect(forOrders!.accessToken, orders)).active).to.equal(true);
      expect((await introspect(forPayments!.accessToken, orders)).active).to.equal(true);
      // checkout may call orders, but not payments.
      expect((await introspect(forOrders!.accessToken, checkout)).active).to.equal(true);
      expect(await introspect(forPayments!.accessToken, checkout)).to.deep.include({ active: false, sub: "" });
      // Portcullis's own audience: the user tokens resource servers are handed, and service tokens for Portcullis.
      expect((await introspect(userToken, checkout)).active).to.equal(true);
      expect((await introspect(orders, checkout)).active).to.equal(true);
    });

    it("refuses a disabled service as the caller with SERVICE_DISABLED, through both doors, and audits it", async function () {
      this.timeout(60_000);
      const userToken = await signIn();
      expect((await introspect(userToken, archive)).active).to.equal(true);
      await runAdmin(platform.stores, "service", "disable", "archive");

      const { error } = await tokens.call("introspectToken", { token: userToken }, bearer(archive));
      expect(error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(reasonOf(error!)).to.equal("SERVICE_DISABLED");
      const viaGateway = await connectCall(platform.running.httpPort!, "/portcullis.v1.TokenService/IntrospectToken", { token: userToken }, bearer(archive));
      expect([viaGateway.status, viaGateway.json.code]).to.deep.equal([403, "permission_denied"]);
      const exchanged = await exchange(archive, userToken, "portcullis");
      expect(reasonOf(exchanged.error!)).to.equal("SERVICE_DISABLED");

      const denied = (await auditRows("token.introspect")).filter((r) => r.detail.client_id === "archive");
      expect(denied.map((r) => [r.outcome, r.detail.reason])).to.deep.equal([
        ["denied", "service_disabled"],
        ["denied", "service_disabled"],
      ]);
    });

    it("says active: false for a token exchanged by a service since disabled, and for every token exchanged from it", async function () {
      this.timeout(60_000);
      const { response: forOrders } = await exchange(relay, await signIn(), "orders");
      const { response: forPayments } = await exchange(orders, forOrders!.accessToken, "payments");
      expect((await introspect(forOrders!.accessToken)).active).to.equal(true);
      expect((await introspect(forPayments!.accessToken)).active).to.equal(true);
      await runAdmin(platform.stores, "service", "disable", "relay");
      expect((await introspect(forOrders!.accessToken)).active).to.equal(false);
      // relay acted first, nested under orders.
      expect((await introspect(forPayments!.accessToken)).active).to.equal(false);
    });

    it("says active: false for the user's token and every token exchanged from it once the session signs out", async () => {
      const userToken = await signIn();
      const { response } = await exchange(checkout, userToken, "orders");
      expect((await introspect(response!.accessToken)).active).to.equal(true);
      expect((await auth.call("logout", {}, bearer(userToken))).error).to.equal(undefined);
      expect((await introspect(userToken)).active).to.equal(false);
      expect((await introspect(response!.accessToken)).active).to.equal(false);
    });

    it("says active: false within a second of a Logout on another instance", async () => {
      const other = await startPlatform(platform.env);
      const otherTokens = grpcClient(TokenService, other.grpcPort!);
      try {
        const userToken = await signIn();
        const { response } = await exchange(checkout, userToken, "orders");
        const activeThere = async () => (await otherTokens.call("introspectToken", { token: response!.accessToken }, bearer(orders))).response!.active;
        expect(await activeThere()).to.equal(true);
        expect((await auth.call("logout", {}, bearer(userToken))).error).to.equal(undefined);
        const deadline = Date.now() + 1000;
        while (await activeThere()) {
          if (Date.now() > deadline) throw new Error("still active a second after the Logout");
          await sleep(20);
        }
      } finally {
        otherTokens.close();
        await other.stop();
      }
    });

    it("reflects a permission taken away since the token was issued, as does a token exchanged from it", async function () {
      this.timeout(60_000);
      const phone = newPhone();
      await signInByPhone(platform.running.grpcPort!, sms, phone);
      await runAdmin(platform.stores, "grant", phone, "audit.read");
      const { tokens: issued } = await signInByPhone(platform.running.grpcPort!, sms, phone);
      secrets.push(issued!.accessToken, issued!.refreshToken);
      expect((await introspect(issued!.accessToken)).perm).to.deep.equal(["audit.read"]);

      await runAdmin(platform.stores, "revoke", phone, "audit.read");
      // The admin tool is another process: the change reaches this instance on the feed.
      const deadline = Date.now() + 5000;
      while ((await introspect(issued!.accessToken)).perm.length > 0) {
        if (Date.now() > deadline) throw new Error("the permission is still there 5 s after it was taken away");
        await sleep(50);
      }
      const { response } = await exchange(checkout, issued!.accessToken, "orders");
      expect(claimsOf(response!.accessToken).perm).to.deep.equal([]);
    });

    it("says active: false for the tokens of a disabled service account", async function () {
      this.timeout(60_000);
      expect((await introspect(reports)).active).to.equal(true);
      await runAdmin(platform.stores, "service", "disable", "reports");
      expect((await introspect(reports)).active).to.equal(false);
    });

    it("answers the same at the Connect gateway", async () => {
      const answer = await connectCall(platform.running.httpPort!, "/portcullis.v1.TokenService/IntrospectToken", { token: checkout }, bearer(orders));
      expect(answer.status).to.equal(200);
      expect(answer.json).to.include({ active: true, sub: "checkout", svc: true });
    });

    it("is for services: a user token as the caller is refused", async () => {
      const userToken = await signIn();
      const { error } = await tokens.call("introspectToken", { token: userToken }, bearer(userToken));
      expect(error?.code).to.equal(grpc.status.PERMISSION_DENIED);
    });
  });

  describe("afterwards", () => {
    it("no token or secret reached a log line or an audit row", async () => {
      await expectNoSecretLeaked(platform.db, platform.logLines, secrets);
    });
  });
});
