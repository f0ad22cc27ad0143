import { createPublicKey, verify as verifySignature } from "node:crypto";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, grpcErrorDetails } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { registerVerified } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

const device = { deviceId: "device-1", deviceType: DeviceType.IOS, deviceName: "Test phone" };
let phoneCounter = 0;
/** A fresh valid UK mobile number per test, so limits of one test do not touch another. */
const newPhone = () => `+4479111${String(10000 + phoneCounter++).padStart(5, "0")}`;
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
/** "+447911110007" → the same number as people write it: "+44 7911 110007", "+44 (0)7911 110007", … */
const spellings = (e164: string) => {
  const national = e164.slice(3);
  const [area, rest] = [national.slice(0, 4), national.slice(4)];
  return [`+44 ${area} ${rest}`, `+44 (0)${area} ${rest}`, e164, `+44-${area}-${rest}`];
};

describe("Sign-in", () => {
  const inbox = new SmsInbox();
  const mail = new MailInbox();
  const secrets: string[] = [];
  const platform = platformForSuite({
    inboxes: [inbox, mail],
    secrets,
    env: {
      OTP_RESEND_COOLDOWN_SECONDS: "0",
      REFRESH_REUSE_INTERVAL: "1",
      OTP_FAILURE_BUDGET: "7",
      RATE_LIMITS: [
        "otp_verify_ip=1000/3600", "otp_send_ip=1000/3600", "login_ip=1000/900", "login_email=1000/900",
        "register_ip=1000/3600", "register_email=1000/3600", "verify_email_ip=1000/3600", "refresh_user=1000/60", "refresh_ip=1000/60",
      ].join(","),
    },
  });
  const auth = platform.client(AuthService);

  async function signInByPhone(phone = newPhone()) {
    const sent = await auth.call("sendOtp", { phoneNumber: phone });
    expect(sent.error).to.equal(undefined);
    const code = inbox.codeFor(phone);
    secrets.push(code);
    const { response, error } = await auth.call("verifyOtp", { phoneNumber: phone, code, device });
    expect(error).to.equal(undefined);
    secrets.push(response!.tokens!.accessToken, response!.tokens!.refreshToken);
    return { phone, ...response! };
  }

  describe("by phone one-time code", () => {
    it("signs in over gRPC, reaches GetProfile, refreshes, logs out, and the old tokens are refused", async () => {
      const phone = newPhone();
      const signedIn = await signInByPhone(phone);
      expect(signedIn.newUser).to.equal(true);
      expect(signedIn.user!.phoneNumber).to.equal(phone);
      expect(signedIn.user!.kycLevel).to.equal(0);

      const profile = await auth.call("getProfile", {}, bearer(signedIn.tokens!.accessToken));
      expect(profile.response?.user?.userId).to.equal(signedIn.user!.userId);

      const refreshed = await auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken });
      const next = refreshed.response!.tokens!;
      expect(next.refreshToken).not.to.equal(signedIn.tokens!.refreshToken);
      secrets.push(next.accessToken, next.refreshToken);

      expect((await auth.call("logout", {}, bearer(next.accessToken))).error).to.equal(undefined);
      const after = await auth.call("getProfile", {}, bearer(next.accessToken));
      expect(after.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(after.error!), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
      const refreshAfter = await auth.call("refreshToken", { refreshToken: next.refreshToken });
      expect(refreshAfter.error?.code).to.equal(grpc.status.UNAUTHENTICATED);

      const again = await signInByPhone(phone);
      expect(again.newUser, "the second sign-in finds the same user").to.equal(false);
      expect(again.user!.userId).to.equal(signedIn.user!.userId);
    });

    it("signs in through the gateway with Connect JSON, and the same steps hold", async () => {
      const port = platform.running.httpPort!;
      const phone = newPhone();
      expect((await connectCall(port, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: phone })).status).to.equal(200);
      const code = inbox.codeFor(phone);
      const verified = await connectCall(port, "/portcullis.v1.AuthService/VerifyOtp", {
        phoneNumber: phone, code, device: { deviceId: "web-1", deviceType: "DEVICE_TYPE_WEB", deviceName: "Firefox" },
      });
      expect(verified.status).to.equal(200);
      const { accessToken, refreshToken } = verified.json.tokens;
      secrets.push(code, accessToken, refreshToken);

      const profile = await connectCall(port, "/portcullis.v1.AuthService/GetProfile", {}, bearer(accessToken));
      expect(profile.json.user.phoneNumber).to.equal(phone);
      const refreshed = await connectCall(port, "/portcullis.v1.AuthService/RefreshToken", { refreshToken });
      expect(refreshed.status).to.equal(200);
      const next = refreshed.json.tokens;
      secrets.push(next.accessToken, next.refreshToken);
      expect((await connectCall(port, "/portcullis.v1.AuthService/Logout", {}, bearer(next.accessToken))).status).to.equal(200);
      const after = await connectCall(port, "/portcullis.v1.AuthService/GetProfile", {}, bearer(next.accessToken));
      expect(after.status).to.equal(401);
      expect(after.json.details[0].debug.reason).to.equal("SESSION_REVOKED");
    });

    it("rejects a number that is not a valid mobile number, naming the field", async () => {
      const { error } = await auth.call("sendOtp", { phoneNumber: "12345" });
      expect(error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(detailOf(grpcErrorDetails(error!), BadRequestSchema)?.fieldViolations[0]?.field).to.equal("phone_number");
    });

    it("counts every spelling of one number against one send limit: the 4th code in yet another spelling is refused", async () => {
      const phone = newPhone();
      const [spaced, trunkPrefixed, compact, dashed] = spellings(phone);
      for (const spelling of [spaced!, trunkPrefixed!, compact!]) {
        const { error } = await auth.call("sendOtp", { phoneNumber: spelling });
        expect(error, spelling).to.equal(undefined);
      }
      expect(inbox.countFor(phone), "all three went to the one number").to.equal(3);
      const fourth = await auth.call("sendOtp", { phoneNumber: dashed! });
      expect(fourth.error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
      expect(detailOf(grpcErrorDetails(fourth.error!), ErrorInfoSchema)?.metadata.rule).to.equal("otp_send_phone");
      expect(inbox.countFor(phone)).to.equal(3);
    });

    it("refuses a number with an extension, naming phone_number, and sends nothing", async () => {
      const phone = newPhone();
      for (const withExtension of [`${phone} ext. 12`, `${phone};ext=9`]) {
        const { error } = await auth.call("sendOtp", { phoneNumber: withExtension });
        expect(error?.code, withExtension).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(detailOf(grpcErrorDetails(error!), BadRequestSchema)?.fieldViolations.map((v) => v.field), withExtension).to.deep.equal(["phone_number"]);
      }
      expect(inbox.countFor(phone)).to.equal(0);
    });

    it("signs many numbers in at once, each into its own session with a sign-in audit row carrying its own request", async () => {
      const numbers = Array.from({ length: 12 }, () => newPhone());
      for (const phone of numbers) await auth.call("sendOtp", { phoneNumber: phone });
      const wrongOne = numbers[0]!;
      const wrong = inbox.codeFor(wrongOne) === "000000" ? "111111" : "000000";
      const results = await Promise.all(
        numbers.map((phone, i) =>
          auth.call("verifyOtp", { phoneNumber: phone, code: phone === wrongOne ? wrong : inbox.codeFor(phone), device }, { "x-request-id": `many-${phoneCounter}-${i}` }),
        ),
      );
      expect(results[0]!.error?.code, "the wrong code among them").to.equal(grpc.status.INVALID_ARGUMENT);
      const signedIn = results.slice(1).map((r) => r.response!);
      expect(signedIn.every(Boolean), results.find((r, i) => i > 0 && r.error)?.error?.message).to.equal(true);
      expect(new Set(signedIn.map((r) => r.sessionId)).size).to.equal(numbers.length - 1);
      expect(signedIn.every((r) => r.newUser)).to.equal(true);
      secrets.push(...signedIn.flatMap((r) => [r.tokens!.accessToken, r.tokens!.refreshToken]));
      const audited = await platform.db.query<{ request_id: string; session_id: string }>(
        "select request_id, session_id::text from audit_event where event = 'sign_in' and request_id like $1",
        [`many-${phoneCounter}-%`],
      );
      expect(audited.rows.map((row) => `${row.request_id} ${row.session_id}`).sort()).to.deep.equal(
        signedIn.map((r, i) => `many-${phoneCounter}-${i + 1} ${r.sessionId}`).sort(),
      );
      const failures = await platform.db.query("select count(*)::int as n from otp_failure where phone_number = $1", [wrongOne]);
      expect(failures.rows[0].n).to.equal(1);
    });

    it("counts at most 3 of 50 concurrent wrong guesses, then the code is dead", async () => {
      const phone = newPhone();
      await auth.call("sendOtp", { phoneNumber: phone });
      const code = inbox.codeFor(phone);
      const wrong = code === "000000" ? "111111" : "000000";
      const guesses = await Promise.all(Array.from({ length: 50 }, () => auth.call("verifyOtp", { phoneNumber: phone, code: wrong, device })));
      expect(guesses.every((g) => g.error?.code === grpc.status.INVALID_ARGUMENT)).to.equal(true);
      const counted = await platform.db.query("select count(*)::int as n from otp_failure where phone_number = $1", [phone]);
      expect(counted.rows[0].n).to.equal(3);
      const late = await auth.call("verifyOtp", { phoneNumber: phone, code, device });
      expect(late.error?.code, "the right code after 3 wrong ones").to.equal(grpc.status.INVALID_ARGUMENT);
    });

    it("lets exactly one of two simultaneous submissions of the right code sign in", async () => {
      const phone = newPhone();
      await auth.call("sendOtp", { phoneNumber: phone });
      const code = inbox.codeFor(phone);
      const results = await Promise.all([1, 2].map(() => auth.call("verifyOtp", { phoneNumber: phone, code, device })));
      expect(results.filter((r) => r.response).length).to.equal(1);
      expect(results.filter((r) => r.error?.code === grpc.status.INVALID_ARGUMENT).length).to.equal(1);
    });

    it("keeps counting failures across a resend, and locks the number when the budget is spent", async () => {
      // The budget here is 7: 3 wrong on the first code, 3 on a second, 1 on a third.
      const phone = newPhone();
      for (const wrongGuesses of [3, 3, 1]) {
        await auth.call("sendOtp", { phoneNumber: phone });
        const code = inbox.codeFor(phone);
        const wrong = code === "000000" ? "111111" : "000000";
        for (let i = 0; i < wrongGuesses; i++) await auth.call("verifyOtp", { phoneNumber: phone, code: wrong, device });
      }
      const code = inbox.codeFor(phone);
      const locked = await auth.call("verifyOtp", { phoneNumber: phone, code, device });
      expect(locked.error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
      expect(detailOf(grpcErrorDetails(locked.error!), ErrorInfoSchema)?.metadata.rule).to.equal("otp_failure_budget");
      const resend = await auth.call("sendOtp", { phoneNumber: phone });
      expect(resend.error?.code, "no new code for a locked number").to.equal(grpc.status.RESOURCE_EXHAUSTED);
      const audited = await platform.db.query("select count(*)::int as n from audit_event where event = 'otp.phone_locked'");
      expect(audited.rows[0].n).to.be.greaterThan(0);
    });

    it("spends the failure budget exactly under concurrent guesses: a code gets only the attempts the budget has left", async () => {
      // The budget here is 7: 3 wrong on each of two codes leaves 1 for the third code, however many guesses race for it.
      const phone = newPhone();
      for (let i = 0; i < 2; i++) {
        await auth.call("sendOtp", { phoneNumber: phone });
        const code = inbox.codeFor(phone);
        const wrong = code === "000000" ? "111111" : "000000";
        for (let j = 0; j < 3; j++) await auth.call("verifyOtp", { phoneNumber: phone, code: wrong, device });
      }
      expect((await auth.call("sendOtp", { phoneNumber: phone })).error, "a third code: the budget is not spent yet").to.equal(undefined);
      const code = inbox.codeFor(phone);
      const wrong = code === "000000" ? "111111" : "000000";
      const guesses = await Promise.all(Array.from({ length: 10 }, () => auth.call("verifyOtp", { phoneNumber: phone, code: wrong, device })));
      for (const guess of guesses) expect(guess.error?.code).to.be.oneOf([grpc.status.INVALID_ARGUMENT, grpc.status.RESOURCE_EXHAUSTED]);
      const counted = await platform.db.query("select count(*)::int as n from otp_failure where phone_number = $1", [phone]);
      expect(counted.rows[0].n, "failures recorded for the number").to.equal(7);
      const late = await auth.call("verifyOtp", { phoneNumber: phone, code, device });
      expect(late.error?.code, "even the right code, once the budget is spent").to.equal(grpc.status.RESOURCE_EXHAUSTED);
    });

    it("refuses the 4th code for one number within the hour, with RetryInfo and Retry-After", async () => {
      const phone = newPhone();
      for (let i = 0; i < 3; i++) expect((await auth.call("sendOtp", { phoneNumber: phone })).error).to.equal(undefined);
      const fourth = await auth.call("sendOtp", { phoneNumber: phone });
      expect(fourth.error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
      const retry = detailOf(grpcErrorDetails(fourth.error!), RetryInfoSchema);
      expect(Number(retry?.retryDelay?.seconds)).to.be.greaterThan(0);
      const http = await connectCall(platform.running.httpPort!, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: phone });
      expect(http.status).to.equal(429);
      expect(Number(http.headers.get("retry-after"))).to.be.greaterThan(0);
      await platform.running.app!.settled();
      const audited = await platform.db.query("select count(*)::int as n from audit_event where event = 'rate_limit.hit'");
      expect(audited.rows[0].n).to.be.greaterThan(0);
    });

    it("answers UNAVAILABLE when the SMS provider fails, without spending the cooldown or attempts", async () => {
      const phone = newPhone();
      inbox.failing = true;
      const failed = await auth.call("sendOtp", { phoneNumber: phone });
      inbox.failing = false;
      expect(failed.error?.code).to.equal(grpc.status.UNAVAILABLE);
      const open = await platform.db.query("select count(*)::int as n from otp_challenge where phone_number = $1", [phone]);
      expect(open.rows[0].n, "no code left behind").to.equal(0);
      expect((await auth.call("sendOtp", { phoneNumber: phone })).error).to.equal(undefined);
    });
  });

  describe("by email and password", () => {
    const password = "correct horse battery staple";
    secrets.push(password);

    it("registers, logs in, changes the password, and signs out the other sessions — over gRPC", async () => {
      const email = `ana.${phoneCounter++}@example.com`;
      const registered = await registerVerified(platform.running.grpcPort!, mail, email.toUpperCase(), password, { displayName: "Ana" });
      expect(registered?.user?.email, "normalised").to.equal(email);
      secrets.push(registered!.tokens!.accessToken, registered!.tokens!.refreshToken);
      const login = await auth.call("login", { email, password, device });
      expect(login.error).to.equal(undefined);
      const profile = await auth.call("getProfile", {}, bearer(login.response!.tokens!.accessToken));
      expect(profile.response?.user?.displayName).to.equal("Ana");

      const newPassword = "a whole new passphrase";
      secrets.push(newPassword);
      const changed = await auth.call(
        "changePassword",
        { currentPassword: password, newPassword },
        bearer(login.response!.tokens!.accessToken),
      );
      expect(changed.response?.revokedSessionCount).to.equal(1);
      const other = await auth.call("getProfile", {}, bearer(registered!.tokens!.accessToken));
      expect(other.error?.code, "the other session is signed out").to.equal(grpc.status.UNAUTHENTICATED);
      expect((await auth.call("login", { email, password, device })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect((await auth.call("login", { email, password: newPassword, device })).error).to.equal(undefined);
    });

    it("answers ChangePassword for an account deleted meanwhile as a signed-out session, not a phone account", async () => {
      const email = `gone.${phoneCounter++}@example.com`;
      const registered = await registerVerified(platform.running.grpcPort!, mail, email, password);
      secrets.push(registered!.tokens!.accessToken, registered!.tokens!.refreshToken);
      await platform.db.query("delete from app_user where email = $1", [email]);
      const changed = await auth.call(
        "changePassword",
        { currentPassword: password, newPassword: "another fine passphrase" },
        bearer(registered!.tokens!.accessToken),
      );
      expect(changed.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    });

    it("registers and logs in through the gateway with Connect JSON", async () => {
      const port = platform.running.httpPort!;
      const email = `web.${phoneCounter++}@example.com`;
      const registered = await connectCall(port, "/portcullis.v1.AuthService/Register", { email, password, device: { deviceId: "w", deviceType: "DEVICE_TYPE_WEB" } });
      expect(registered.status).to.equal(200);
      const code = mail.codeFor(email);
      secrets.push(code);
      expect((await connectCall(port, "/portcullis.v1.AuthService/VerifyEmail", { email, code })).status).to.equal(200);
      const login = await connectCall(port, "/portcullis.v1.AuthService/Login", { email, password, device: { deviceId: "w" } });
      expect(login.status).to.equal(200);
      const profile = await connectCall(port, "/portcullis.v1.AuthService/GetProfile", {}, bearer(login.json.tokens.accessToken));
      expect(profile.json.user.email).to.equal(email);
    });

    it("refuses short and common passwords, naming the field, with no composition rules", async () => {
      for (const weak of ["short", "password123", "qwertyuiop"]) {
        const { error } = await auth.call("register", { email: `weak.${phoneCounter++}@example.com`, password: weak, device });
        expect(error?.code, weak).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(detailOf(grpcErrorDetails(error!), BadRequestSchema)?.fieldViolations[0]?.field).to.equal("password");
      }
    });

    it("answers an unknown email exactly as a wrong password", async () => {
      const email = `known.${phoneCounter++}@example.com`;
      await auth.call("register", { email, password, device });
      const wrong = await auth.call("login", { email, password: "not the password at all", device });
      const unknown = await auth.call("login", { email: `nobody.${phoneCounter++}@example.com`, password: "not the password at all", device });
      expect(wrong.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(unknown.error?.code).to.equal(wrong.error?.code);
      expect(unknown.error?.details).to.equal(wrong.error?.details);
    });

    it("locks the account after 5 consecutive failures, answering as a wrong password, with audit events", async () => {
      const email = `locked.${phoneCounter++}@example.com`;
      await auth.call("register", { email, password, device });
      for (let i = 0; i < 5; i++) await auth.call("login", { email, password: "wrong wrong wrong", device });
      const lockedOut = await auth.call("login", { email, password, device });
      expect(lockedOut.error?.code, "even the right password waits").to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(lockedOut.error!), ErrorInfoSchema)?.reason).to.equal("INVALID_CREDENTIALS");
      const audited = await platform.db.query(
        "select count(*)::int as n from audit_event a join app_user u on u.id = a.user_id where u.email = $1 and a.event = 'account.locked'",
        [email],
      );
      expect(audited.rows[0].n).to.equal(1);
      const denied = await platform.db.query(
        "select a.detail->>'reason' as reason from audit_event a join app_user u on u.id = a.user_id where u.email = $1 and a.event = 'sign_in' and a.outcome = 'denied'",
        [email],
      );
      expect(denied.rows).to.deep.equal([{ reason: "locked" }]);
    });

    it("answers six tries at an unknown email exactly as six at a known one that locks", async () => {
      const known = `lockable.${phoneCounter++}@example.com`;
      await auth.call("register", { email: known, password, device });
      const answers = async (email: string) => {
        const seen = [];
        for (let i = 0; i < 6; i++) {
          const { error } = await auth.call("login", { email, password: "wrong wrong wrong", device });
          seen.push({ code: error?.code, message: error?.details, details: error && grpcErrorDetails(error) });
        }
        return seen;
      };
      const lockedOut = await answers(known);
      const unknown = await answers(`nobody.${phoneCounter++}@example.com`);
      expect(lockedOut[0]!.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(lockedOut).to.deep.equal(unknown);
    });
  });

  describe("control characters in free text", () => {
    const password = "a passphrase for names";
    secrets.push(password);
    const fieldsOf = (error: grpc.ServiceError) => detailOf(grpcErrorDetails(error), BadRequestSchema)?.fieldViolations.map((v) => v.field);

    it("refuses a NUL in UpdateProfile's display_name with INVALID_ARGUMENT naming the field, never INTERNAL, and serves the next call", async () => {
      const signedIn = await signInByPhone();
      const token = signedIn.tokens!.accessToken;
      const refused = await auth.call("updateProfile", { user: { displayName: "Ana\u0000" }, updateMask: { paths: ["display_name"] } }, bearer(token));
      expect(refused.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(refused.error!)).to.deep.equal(["user.display_name"]);
      const updated = await auth.call("updateProfile", { user: { displayName: "Ana" }, updateMask: { paths: ["display_name"] } }, bearer(token));
      expect(updated.error).to.equal(undefined);
      expect((await auth.call("getProfile", {}, bearer(token))).response?.user?.displayName).to.equal("Ana");
    });

    it("refuses a NUL in Register's display_name or device_name, naming the field, and registers the next call", async () => {
      const email = `nul.${phoneCounter++}@example.com`;
      const badName = await auth.call("register", { email, password, displayName: "Ana\u0000", device });
      expect(badName.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(badName.error!)).to.deep.equal(["display_name"]);
      const badDevice = await auth.call("register", { email, password, displayName: "Ana", device: { ...device, deviceName: "Phone\u0000" } });
      expect(badDevice.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(badDevice.error!)).to.deep.equal(["device.device_name"]);
      const registered = await auth.call("register", { email, password, displayName: "Ana", device });
      expect(registered.error).to.equal(undefined);
      expect(mail.countFor(email), "one mail, for the call that registered").to.equal(1);
    });

    it("refuses a NUL in VerifyOtp's device_name, naming the field, and the code still signs in", async () => {
      const phone = newPhone();
      await auth.call("sendOtp", { phoneNumber: phone });
      const code = inbox.codeFor(phone);
      secrets.push(code);
      const refused = await auth.call("verifyOtp", { phoneNumber: phone, code, device: { ...device, deviceName: "\u0000" } });
      expect(refused.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(refused.error!)).to.deep.equal(["device.device_name"]);
      const signedIn = await auth.call("verifyOtp", { phoneNumber: phone, code, device });
      expect(signedIn.error).to.equal(undefined);
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);
    });
  });

  describe("the access tokens it issues", () => {
    it("verify with an independent implementation (node:crypto) against the published JWKS", async () => {
      const signedIn = await signInByPhone();
      const token = signedIn.tokens!.accessToken;
      const [header, payload, signature] = token.split(".") as [string, string, string];
      const { kid, alg, typ } = JSON.parse(Buffer.from(header, "base64url").toString());
      expect({ alg, typ }).to.deep.equal({ alg: "ES256", typ: "at+jwt" });
      const jwks = (await (await fetch(`http://127.0.0.1:${platform.running.httpPort}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
      const jwk = jwks.keys.find((k) => k.kid === kid)!;
      const key = createPublicKey({ key: jwk as never, format: "jwk" });
      const valid = verifySignature("sha256", Buffer.from(`${header}.${payload}`), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(signature, "base64url"));
      expect(valid).to.equal(true);
      const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
      expect(claims).to.include({ iss: "portcullis", aud: "portcullis", sub: signedIn.user!.userId, sid: signedIn.sessionId, did: "device-1", kyc_lvl: 0 });
      expect(claims.amr).to.include("otp");
      expect(claims.exp - claims.iat).to.equal(900);
    });
  });
});
