import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { JsonObject } from "@bufbuild/protobuf";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType, SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";
import { PasskeyService } from "../../gen/portcullis/v1/passkey_service_pb.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";
import { SoftAuthenticator } from "../support/authenticator.js";
import { connectCall, fieldsOf, grpcClient, reasonOf } from "../support/clients.js";
import { runAdmin, startPlatform } from "../support/platform.js";
import { claimsOf } from "../support/service-accounts.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";
import { enrolTotp } from "../support/totp.js";

let devices = 0;

const newDevice = () => ({ deviceId: `passkey-device-${devices++}`, deviceType: DeviceType.WEB, deviceName: "Laptop" });

/**
 * Passkeys end to end over gRPC, with a software authenticator on the page
 * APP_URL names (http://localhost:8080, relying party "localhost"): a signed-in
 * user registers one, anyone signs in with one without naming an account, and
 * every way a ceremony can go wrong is refused and audited.
 */
describe("Passkeys", () => {
  const sms = new SmsInbox();
  /** Every ceremony id and token handed out: none may reach a log line or an audit row. */
  const handedOut: string[] = [];
  const platform = platformForSuite({
    inboxes: [sms],
    secrets: handedOut,
    env: {
      APP_URL: "http://localhost:8080",
      OTP_RESEND_COOLDOWN_SECONDS: "0",
      RATE_LIMITS: [
        "otp_send_ip=1000/60", "otp_send_phone=1000/60", "otp_verify_ip=1000/60",
        "passkey_user=1000/60", "passkey_sign_in_ip=1000/60", "passkey_sign_in_global=1000/60",
      ].join(","),
    },
  });
  const passkeys = platform.client(PasskeyService);
  const mfa = platform.client(MfaService);
  const sessions = platform.client(SessionService);
  const auth = platform.client(AuthService);

  /** A phone account, signed in on a phone. */
  async function account() {
    const phone = newPhone();
    const signedIn = (await signInByPhone(platform.running.grpcPort!, sms, phone))!;
    handedOut.push(signedIn.tokens!.accessToken, signedIn.tokens!.refreshToken);
    return { phone, userId: signedIn.user!.userId, token: signedIn.tokens!.accessToken };
  }

  async function startRegistration(token: string) {
    const { response, error } = await passkeys.call("startPasskeyRegistration", {}, bearer(token));
    expect(error).to.equal(undefined);
    handedOut.push(response!.ceremonyId);
    return { ceremonyId: response!.ceremonyId, options: response!.options! };
  }

  /** Registers a passkey of `authenticator` for the account signed in with `token`. */
  async function register(token: string, authenticator: SoftAuthenticator, name = "") {
    const { ceremonyId, options } = await startRegistration(token);
    const { response, error } = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential: authenticator.create(options), name }, bearer(token));
    expect(error).to.equal(undefined);
    return response!.passkey!;
  }

  /** A registered account and the authenticator holding its passkey. */
  async function accountWithPasskey(authenticator = new SoftAuthenticator()) {
    const owner = await account();
    const passkey = await register(owner.token, authenticator);
    return { ...owner, authenticator, passkey };
  }

  async function startSignIn() {
    const { response, error } = await passkeys.call("startPasskeySignIn", {});
    expect(error).to.equal(undefined);
    handedOut.push(response!.ceremonyId);
    return { ceremonyId: response!.ceremonyId, options: response!.options! };
  }

  function finishSignIn(ceremonyId: string, credential: JsonObject) {
    return passkeys.call("finishPasskeySignIn", { ceremonyId, credential, device: newDevice() });
  }

  /** A whole sign-in: StartPasskeySignIn, the authenticator's assertion (bent by `ceremony`), FinishPasskeySignIn. */
  async function signIn(authenticator: SoftAuthenticator, ceremony: Parameters<SoftAuthenticator["get"]>[1] = {}) {
    const { ceremonyId, options } = await startSignIn();
    const result = await finishSignIn(ceremonyId, authenticator.get(options, ceremony));
    if (result.response) handedOut.push(result.response.tokens!.accessToken, result.response.tokens!.refreshToken);
    return result;
  }

  function expectRefused(error: grpc.ServiceError | undefined) {
    expect(error?.code, "UNAUTHENTICATED").to.equal(grpc.status.UNAUTHENTICATED);
    expect(reasonOf(error!)).to.equal("INVALID_CREDENTIALS");
    expect(error!.details).to.equal("passkey sign-in failed");
  }

  function expectInvalid(error: grpc.ServiceError | undefined, field: string) {
    expect(error?.code, "INVALID_ARGUMENT").to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(error!)).to.deep.equal([field]);
  }

  /** The newest audit row of `event`, for the user when given. */
  /** The id of the newest `event` row a test has looked at: each look wants a row written since, so a row from a step before cannot pass for the next. */
  const seenAudits = new Map<string, string>();
  async function lastAudit(event: string, userId?: string) {
    const { rows } = await platform.db.query(
      `select id::text, outcome, user_id, detail from audit_event
       where event = $1 and ($2::uuid is null or user_id = $2) and id > $3 order by audit_event.id desc limit 1`,
      [event, userId ?? null, seenAudits.get(event) ?? "0"],
    );
    const row = rows[0] as { id: string; outcome: string; user_id: string | null; detail: Record<string, unknown> } | undefined;
    if (row) seenAudits.set(event, row.id);
    return row;
  }

  describe("registration", () => {
    it("asks an account with TOTP for its second factor even right after a passkey sign-in, to add or delete a passkey", async () => {
      const owner = await accountWithPasskey();
      const { secret, recoveryCodes } = await enrolTotp(mfa, owner.token, "");
      handedOut.push(secret, ...recoveryCodes);

      const token = (await signIn(owner.authenticator)).response!.tokens!.accessToken;
      expect(claimsOf(token)).to.include({ aal: 2, mfa: true });
      for (const refused of [
        await passkeys.call("startPasskeyRegistration", {}, bearer(token)),
        await passkeys.call("deletePasskey", { passkeyId: owner.passkey.id }, bearer(token)),
      ]) {
        expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
        expect(reasonOf(refused.error!)).to.equal("STEP_UP_REQUIRED");
      }

      const steppedUp = await mfa.call("stepUp", { proof: { factor: { case: "recoveryCode", value: recoveryCodes[0]! } } }, bearer(token));
      expect(steppedUp.error).to.equal(undefined);
      handedOut.push(steppedUp.response!.accessToken);
      expect((await passkeys.call("startPasskeyRegistration", {}, bearer(steppedUp.response!.accessToken))).error).to.equal(undefined);
    });

    it("needs more than a token: an account without a password must have signed in recently", async () => {
      const { userId, token } = await account();
      await platform.db.query("update session set create_time = now() - interval '11 minutes' where user_id = $1", [userId]);
      const stale = await passkeys.call("startPasskeyRegistration", {}, bearer(token));
      expect(stale.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(reasonOf(stale.error!)).to.equal("FRESH_SIGN_IN_REQUIRED");
      const refused = await platform.db.query("select detail from audit_event where event = 'passkey.registered' and user_id = $1 and outcome = 'denied'", [userId]);
      expect(refused.rows.map((row) => row.detail.reason)).to.deep.equal(["fresh_sign_in_required"]);
    });

    it("asks for a discoverable, user-verified credential bound to the account's id, on the relying party of APP_URL", async () => {
      const owner = await account();
      const { options } = await startRegistration(owner.token);
      expect(options.rp).to.deep.include({ id: "localhost" });
      const user = options.user as JsonObject;
      expect(Buffer.from(user.id as string, "base64url").toString("hex")).to.equal(owner.userId.replace(/-/g, ""));
      expect(user.name).to.equal(owner.phone);
      expect(options.authenticatorSelection).to.deep.include({ residentKey: "required", requireResidentKey: true, userVerification: "required" });
      expect(options.attestation).to.equal("none");
      expect(options.excludeCredentials).to.deep.equal([]);
    });

    it("stores the passkey, named by the owner or \"Passkey\", and excludes it from the next registration", async () => {
      const owner = await account();
      const laptop = new SoftAuthenticator();
      const first = await register(owner.token, laptop, "  MacBook Touch ID ");
      expect(first.name).to.equal("MacBook Touch ID");
      expect(first.synced).to.equal(false);
      expect(first.lastUseTime).to.equal(undefined);
      const second = await register(owner.token, new SoftAuthenticator({ origin: "http://localhost:8080", rpId: "localhost", synced: true }));
      expect(second.name).to.equal("Passkey");
      expect(second.synced).to.equal(true);

      const { options } = await startRegistration(owner.token);
      const excluded = options.excludeCredentials as JsonObject[];
      expect(excluded.map((c) => c.id).sort()).to.deep.equal([first.credentialId, second.credentialId].sort());
      expect(excluded[0]).to.deep.include({ type: "public-key", transports: ["internal", "hybrid"] });
      expect(() => laptop.create(options), "the authenticator refuses to make a second passkey for the account").to.throw(/InvalidStateError/);

      const listed = await passkeys.call("listPasskeys", {}, bearer(owner.token));
      expect(listed.response!.passkeys.map((p) => p.id), "newest first").to.deep.equal([second.id, first.id]);
      expect(await lastAudit("passkey.registered", owner.userId)).to.deep.include({ outcome: "success", detail: { passkey: second.id, synced: true } });
    });

    it("refuses a credential registered already, to anyone, without saying whose", async () => {
      const holder = await accountWithPasskey();
      const other = await account();
      const { ceremonyId, options } = await startRegistration(other.token);
      const credential = holder.authenticator.create(options, { reuse: holder.passkey.credentialId });
      const { error } = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential, name: "" }, bearer(other.token));
      expectInvalid(error, "credential");
      expect(error!.details).not.to.contain(holder.userId);
      expect(await lastAudit("passkey.registered", other.userId)).to.deep.include({ outcome: "failure", detail: { reason: "already_registered" } });
    });

    it("refuses an answer from another page, for another relying party, or without user verification", async () => {
      const owner = await account();
      for (const ceremony of [{ origin: "https://evil.example" }, { rpId: "evil.example" }, { userVerified: false }]) {
        const { ceremonyId, options } = await startRegistration(owner.token);
        const credential = new SoftAuthenticator().create(options, ceremony);
        const { error } = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential, name: "" }, bearer(owner.token));
        expectInvalid(error, "credential");
        expect((await lastAudit("passkey.registered", owner.userId))!.detail).to.include({ reason: "verification_failed" });
      }
      expect((await passkeys.call("listPasskeys", {}, bearer(owner.token))).response!.passkeys).to.deep.equal([]);
    });

    it("finishes a ceremony once, only for the user who started it, and never as a sign-in", async () => {
      const owner = await accountWithPasskey();
      const intruder = await account();
      const { ceremonyId, options } = await startRegistration(owner.token);
      const credential = new SoftAuthenticator().create(options);

      const stolen = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential, name: "" }, bearer(intruder.token));
      expectInvalid(stolen.error, "ceremony_id");
      expectRefused((await finishSignIn(ceremonyId, owner.authenticator.get(options))).error);

      const finished = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential, name: "" }, bearer(owner.token));
      expect(finished.error, "another user's try leaves the ceremony to its owner").to.equal(undefined);
      const again = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential, name: "" }, bearer(owner.token));
      expectInvalid(again.error, "ceremony_id");
      expect(await lastAudit("passkey.registered", owner.userId)).to.deep.include({ outcome: "failure", detail: { reason: "ceremony_invalid" } });
    });

    it("refuses an expired ceremony", async () => {
      const owner = await account();
      const { ceremonyId, options } = await startRegistration(owner.token);
      await platform.db.query("update passkey_ceremony set expire_time = now() - interval '1 second' where user_id = $1", [owner.userId]);
      const { error } = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential: new SoftAuthenticator().create(options), name: "" }, bearer(owner.token));
      expectInvalid(error, "ceremony_id");
    });

    it("needs a signed-in user", async () => {
      const { error } = await passkeys.call("startPasskeyRegistration", {});
      expect(error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    });
  });

  describe("sign-in", () => {
    it("signs the owner in on a new session at aal 2, from options that name no account", async () => {
      const owner = await accountWithPasskey();
      const { ceremonyId, options } = await startSignIn();
      expect(options).to.deep.include({ rpId: "localhost", userVerification: "required", allowCredentials: [] });

      const { response, error } = await finishSignIn(ceremonyId, owner.authenticator.get(options));
      expect(error).to.equal(undefined);
      handedOut.push(response!.tokens!.accessToken, response!.tokens!.refreshToken);
      expect(response!.user!.userId).to.equal(owner.userId);
      const claims = claimsOf(response!.tokens!.accessToken);
      expect(claims.amr).to.include.members(["passkey", "mfa"]);
      expect(claims.aal).to.equal(2);

      const listed = await sessions.call("listSessions", {}, bearer(response!.tokens!.accessToken));
      expect(listed.error, "the access token works").to.equal(undefined);
      const session = listed.response!.sessions.find((s) => s.sessionId === response!.sessionId);
      expect(session!.signInMethod).to.equal(SignInMethod.PASSKEY);
      const [used] = (await passkeys.call("listPasskeys", {}, bearer(owner.token))).response!.passkeys;
      expect(used!.lastUseTime, "last use recorded").not.to.equal(undefined);
      expect(await lastAudit("passkey.sign_in", owner.userId)).to.deep.include({ outcome: "success" });
      expect((await lastAudit("sign_in", owner.userId))!.detail).to.deep.include({ method: "passkey", passkey: owner.passkey.id });
      await platform.running.app!.settled();
      expect((await lastAudit("sign_in.new_device", owner.userId))!.detail, "the owner is told of the new device").to.include({ method: "passkey" });
    });

    it("works through the gateway's Connect JSON, as a browser calls it", async () => {
      const owner = await accountWithPasskey();
      const path = "/portcullis.v1.PasskeyService";
      const started = await connectCall(platform.running.httpPort!, `${path}/StartPasskeySignIn`, {});
      expect(started.status).to.equal(200);
      handedOut.push(started.json.ceremonyId);
      const credential = owner.authenticator.get(started.json.options);
      const finished = await connectCall(platform.running.httpPort!, `${path}/FinishPasskeySignIn`, {
        ceremonyId: started.json.ceremonyId,
        credential,
        device: { deviceId: "browser-1", deviceType: "DEVICE_TYPE_WEB", deviceName: "Browser" },
      });
      expect(finished.status, finished.text).to.equal(200);
      handedOut.push(finished.json.tokens.accessToken, finished.json.tokens.refreshToken);
      expect(finished.json.user.userId).to.equal(owner.userId);
    });

    it("finishes a ceremony once: a replayed assertion is refused", async () => {
      const owner = await accountWithPasskey();
      const { ceremonyId, options } = await startSignIn();
      const assertion = owner.authenticator.get(options);
      const first = await finishSignIn(ceremonyId, assertion);
      expect(first.error).to.equal(undefined);
      handedOut.push(first.response!.tokens!.accessToken, first.response!.tokens!.refreshToken);
      expectRefused((await finishSignIn(ceremonyId, assertion)).error);
      expect((await lastAudit("passkey.sign_in"))!.detail).to.include({ reason: "ceremony_invalid" });
    });

    it("refuses a sign-in ceremony as a registration, an expired one, and one this server never issued", async () => {
      const owner = await accountWithPasskey();
      const asRegistration = await startSignIn();
      const registered = await passkeys.call(
        "finishPasskeyRegistration",
        { ceremonyId: asRegistration.ceremonyId, credential: new SoftAuthenticator().create({ ...asRegistration.options, user: { id: "AAAA" } }), name: "" },
        bearer(owner.token),
      );
      expectInvalid(registered.error, "ceremony_id");

      const expiring = await startSignIn();
      await platform.db.query("update passkey_ceremony set expire_time = now() - interval '1 second' where kind = 'sign_in'");
      expectRefused((await finishSignIn(expiring.ceremonyId, owner.authenticator.get(expiring.options))).error);

      const { options } = await startSignIn();
      for (const ceremonyId of ["A".repeat(43), "not one of ours"]) {
        expectRefused((await finishSignIn(ceremonyId, owner.authenticator.get(options))).error);
        expect((await lastAudit("passkey.sign_in"))!.detail).to.include({ reason: "ceremony_invalid" });
      }
    });

    it("refuses an assertion from another page, for another relying party, or without user verification", async () => {
      const owner = await accountWithPasskey();
      for (const ceremony of [{ origin: "https://evil.example" }, { rpId: "evil.example" }, { userVerified: false }]) {
        expectRefused((await signIn(owner.authenticator, ceremony)).error);
        const audited = await lastAudit("passkey.sign_in", owner.userId);
        expect(audited!.outcome).to.equal("failure");
        expect(audited!.detail).to.include({ reason: "verification_failed", passkey: owner.passkey.id });
      }
      expect((await signIn(owner.authenticator)).error, "the passkey itself still works").to.equal(undefined);
    });

    it("refuses a forged signature, and a user handle that is not the owner's or is missing", async () => {
      const owner = await accountWithPasskey();
      const { ceremonyId, options } = await startSignIn();
      const assertion = owner.authenticator.get(options);
      const forger = new SoftAuthenticator();
      forger.create({ challenge: "AAAA", user: { id: "AAAA" } });
      const forged = { ...assertion, response: { ...assertion.response, signature: forger.get(options).response.signature } };
      expectRefused((await finishSignIn(ceremonyId, forged)).error);
      expect((await lastAudit("passkey.sign_in", owner.userId))!.detail).to.include({ reason: "verification_failed" });

      const other = await account();
      const next = await startSignIn();
      const good = owner.authenticator.get(next.options);
      const otherHandle = Buffer.from(other.userId.replace(/-/g, ""), "hex").toString("base64url");
      expectRefused((await finishSignIn(next.ceremonyId, { ...good, response: { ...good.response, userHandle: otherHandle } })).error);
      expect((await lastAudit("passkey.sign_in", owner.userId))!.detail).to.include({ reason: "user_handle_mismatch" });

      const third = await startSignIn();
      const anonymous = owner.authenticator.get(third.options);
      const { userHandle: _omitted, ...withoutHandle } = anonymous.response;
      expectRefused((await finishSignIn(third.ceremonyId, { ...anonymous, response: withoutHandle as typeof anonymous.response })).error);
      expect((await lastAudit("passkey.sign_in", owner.userId))!.detail).to.include({ reason: "user_handle_mismatch" });
    });

    it("refuses a counter that did not move forward, and audits a suspected clone", async () => {
      const owner = await accountWithPasskey();
      expect((await signIn(owner.authenticator, { counter: 5 })).error).to.equal(undefined);
      for (const counter of [5, 3]) {
        expectRefused((await signIn(owner.authenticator, { counter })).error);
        expect(await lastAudit("passkey.clone_suspected", owner.userId)).to.deep.include({
          outcome: "failure",
          detail: { passkey: owner.passkey.id, stored_count: 5, received_count: counter },
        });
        expect((await lastAudit("passkey.sign_in", owner.userId))!.detail).to.include({ reason: "counter_not_increased" });
      }
      expect((await signIn(owner.authenticator, { counter: 6 })).error).to.equal(undefined);
    });

    it("lets one of two sign-ins racing from the same counter value through", async () => {
      const owner = await accountWithPasskey();
      const ceremonies = [await startSignIn(), await startSignIn()];
      const assertions = ceremonies.map(({ options }) => owner.authenticator.get(options, { counter: 7 }));
      const results = await Promise.all(ceremonies.map(({ ceremonyId }, i) => finishSignIn(ceremonyId, assertions[i]!)));
      for (const { response } of results) if (response) handedOut.push(response.tokens!.accessToken, response.tokens!.refreshToken);
      expect(results.filter((r) => r.error === undefined)).to.have.length(1);
      expectRefused(results.find((r) => r.error)!.error);
    });

    it("lets an authenticator that counts no uses (counter always 0) sign in again and again", async () => {
      const owner = await accountWithPasskey(new SoftAuthenticator({ origin: "http://localhost:8080", rpId: "localhost", countsUses: false }));
      for (let i = 0; i < 2; i++) expect((await signIn(owner.authenticator)).error).to.equal(undefined);
    });

    it("refuses a credential nobody registered", async () => {
      const stranger = new SoftAuthenticator();
      stranger.create({ challenge: "AAAA", user: { id: "AAAA" } });
      expectRefused((await signIn(stranger)).error);
      const audited = await lastAudit("passkey.sign_in");
      expect(audited).to.deep.include({ outcome: "failure", user_id: null });
      expect(audited!.detail).to.include({ reason: "unknown_credential" });
    });

    it("refuses a disabled account, leaving the passkey's counter and last use as they were", async () => {
      const owner = await accountWithPasskey();
      const before = await platform.db.query("select sign_count, last_use_time from passkey where user_id = $1", [owner.userId]);
      await runAdmin(platform.stores, "disable", owner.phone, "test");
      expectRefused((await signIn(owner.authenticator)).error);
      expect((await lastAudit("passkey.sign_in", owner.userId))!.detail).to.include({ reason: "account_disabled" });
      expect((await platform.db.query("select sign_count, last_use_time from passkey where user_id = $1", [owner.userId])).rows).to.deep.equal(before.rows);
    });
  });

  describe("malformed credentials", () => {
    const garbage: [string, (credential: JsonObject) => JsonObject][] = [
      ["empty", () => ({})],
      ["id not base64url", (c) => ({ ...c, id: "not base64!", rawId: "not base64!" })],
      ["rawId differs", (c) => ({ ...c, rawId: "AAAA" })],
      ["wrong type", (c) => ({ ...c, type: "password" })],
      ["no response", (c) => ({ ...c, response: null })],
      ["response a string", (c) => ({ ...c, response: "yes" })],
      ["clientDataJSON garbage", (c) => ({ ...c, response: { ...(c.response as JsonObject), clientDataJSON: "%%%" } })],
      ["clientDataJSON not JSON", (c) => ({ ...c, response: { ...(c.response as JsonObject), clientDataJSON: Buffer.from("hello").toString("base64url") } })],
      ["clientDataJSON impossible length", (c) => ({ ...c, response: { ...(c.response as JsonObject), clientDataJSON: "AAAAA" } })],
    ];

    it("answers INVALID_ARGUMENT on credential when finishing a registration", async () => {
      const owner = await account();
      const extra: typeof garbage = [
        ["attestationObject a number", (c) => ({ ...c, response: { ...(c.response as JsonObject), attestationObject: 7 } })],
        ["transports not strings", (c) => ({ ...c, response: { ...(c.response as JsonObject), transports: [1, 2] } })],
      ];
      for (const [what, bend] of [...garbage, ...extra]) {
        const { ceremonyId, options } = await startRegistration(owner.token);
        const credential = bend(new SoftAuthenticator().create(options));
        const { error } = await passkeys.call("finishPasskeyRegistration", { ceremonyId, credential, name: "" }, bearer(owner.token));
        expect(error?.code, what).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(error!), what).to.deep.equal(["credential"]);
      }
      const missing = await passkeys.call("finishPasskeyRegistration", { ceremonyId: "x", name: "" }, bearer(owner.token));
      expectInvalid(missing.error, "credential");
    });

    it("answers INVALID_ARGUMENT on credential when finishing a sign-in", async () => {
      const owner = await accountWithPasskey();
      const extra: typeof garbage = [
        ["signature a number", (c) => ({ ...c, response: { ...(c.response as JsonObject), signature: 7 } })],
        ["authenticatorData too short", (c) => ({ ...c, response: { ...(c.response as JsonObject), authenticatorData: "AAAA" } })],
        ["userHandle an object", (c) => ({ ...c, response: { ...(c.response as JsonObject), userHandle: {} } })],
      ];
      for (const [what, bend] of [...garbage, ...extra]) {
        const { ceremonyId, options } = await startSignIn();
        const { error } = await finishSignIn(ceremonyId, bend(owner.authenticator.get(options)));
        expect(error?.code, what).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(error!), what).to.deep.equal(["credential"]);
      }
    });
  });

  it("answers FAILED_PRECONDITION PASSKEYS_UNAVAILABLE where APP_URL is no relying party browsers accept (an IP address)", async () => {
    const elsewhere = await startPlatform({ ...platform.stores, APP_URL: "http://127.0.0.1:8080" });
    const client = grpcClient(PasskeyService, elsewhere.grpcPort!);
    try {
      const { token } = await account();
      for (const refused of [await client.call("startPasskeySignIn", {}), await client.call("startPasskeyRegistration", {}, bearer(token))]) {
        expect(refused.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
        expect(reasonOf(refused.error!)).to.equal("PASSKEYS_UNAVAILABLE");
      }
    } finally {
      client.close();
      await elsewhere.stop();
    }
  });

  describe("managing passkeys", () => {
    it("renames and deletes the owner's own; a deleted passkey signs in no more", async () => {
      const owner = await accountWithPasskey();
      const renamed = await passkeys.call("renamePasskey", { passkeyId: owner.passkey.id, name: " YubiKey " }, bearer(owner.token));
      expect(renamed.response!.passkey!.name).to.equal("YubiKey");
      expectInvalid((await passkeys.call("renamePasskey", { passkeyId: owner.passkey.id, name: "   " }, bearer(owner.token))).error, "name");
      expect(await lastAudit("passkey.renamed", owner.userId)).to.deep.include({ outcome: "success", detail: { passkey: owner.passkey.id } });

      expect((await passkeys.call("deletePasskey", { passkeyId: owner.passkey.id }, bearer(owner.token))).error).to.equal(undefined);
      expect(await lastAudit("passkey.deleted", owner.userId)).to.deep.include({ outcome: "success", detail: { passkey: owner.passkey.id } });
      expect((await passkeys.call("listPasskeys", {}, bearer(owner.token))).response!.passkeys).to.deep.equal([]);
      expectRefused((await signIn(owner.authenticator)).error);
      expect((await passkeys.call("deletePasskey", { passkeyId: owner.passkey.id }, bearer(owner.token))).error?.code).to.equal(grpc.status.NOT_FOUND);
    });

    it("answers NOT_FOUND for another user's passkey, and leaves it alone", async () => {
      const owner = await accountWithPasskey();
      const other = await account();
      const rename = await passkeys.call("renamePasskey", { passkeyId: owner.passkey.id, name: "mine now" }, bearer(other.token));
      expect(rename.error?.code).to.equal(grpc.status.NOT_FOUND);
      const remove = await passkeys.call("deletePasskey", { passkeyId: owner.passkey.id }, bearer(other.token));
      expect(remove.error?.code).to.equal(grpc.status.NOT_FOUND);
      expect((await passkeys.call("listPasskeys", {}, bearer(other.token))).response!.passkeys).to.deep.equal([]);
      const [still] = (await passkeys.call("listPasskeys", {}, bearer(owner.token))).response!.passkeys;
      expect(still!.name).to.equal("Passkey");
      expect((await signIn(owner.authenticator)).error).to.equal(undefined);
    });

    it("shows the owner their passkey events in the security history", async () => {
      const owner = await accountWithPasskey();
      await passkeys.call("renamePasskey", { passkeyId: owner.passkey.id, name: "Phone" }, bearer(owner.token));
      const { response } = await auth.call("listSecurityEvents", {}, bearer(owner.token));
      const types = response!.events.map((e) => e.type);
      expect(types).to.include.members(["passkey.registered", "passkey.renamed"]);
      expect(response!.events.find((e) => e.type === "passkey.renamed")!.details).to.deep.equal({ passkey: owner.passkey.id });
    });
  });

  it("purges expired ceremonies", async () => {
    await startSignIn();
    await platform.db.query("update passkey_ceremony set expire_time = now() - interval '1 second'");
    const removed = await platform.running.app!.cleanup.run();
    expect(removed.passkeyCeremonies).to.be.greaterThan(0);
    expect((await platform.db.query("select count(*)::int as n from passkey_ceremony")).rows[0].n).to.equal(0);
  });
});
