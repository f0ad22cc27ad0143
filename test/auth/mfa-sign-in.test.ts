import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";
import { connectCall, fieldsOf, reasonOf } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { claimsOf } from "../support/service-accounts.js";
import { bearer, newPhone, registerVerified, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";
import { codeOf, enrolTotp, secondFactorRateLimits, wrongCodeOf } from "../support/totp.js";

const password = "amber lantern quietly 77";
const maxAttempts = 5;
let accounts = 0;
let devices = 0;

const newDevice = () => ({ deviceId: `device-${devices++}`, deviceType: DeviceType.WEB, deviceName: "Laptop" });

/**
 * Sign-in for an account with TOTP: the first factor (password or phone code)
 * answers a challenge instead of tokens, and VerifyMfa with the second
 * completes it. Calls come through a trusted proxy only where a test names
 * the client's address.
 */
describe("Sign-in with a second factor", () => {
  const mail = new MailInbox();
  const sms = new SmsInbox();
  /** Every secret, code, challenge and token handed out: none may reach a log line or an audit row. */
  const handedOut: string[] = [];
  const platform = platformForSuite({
    inboxes: [mail, sms],
    secrets: handedOut,
    env: {
      OTP_RESEND_COOLDOWN_SECONDS: "0",
      TRUSTED_PROXIES: "127.0.0.1",
      RATE_LIMITS: secondFactorRateLimits,
    },
  });
  const auth = platform.client(AuthService);
  const mfa = platform.client(MfaService);

  /** Turns TOTP on for a signed-in user as their app would; the confirmation spends this step's code. */
  async function enrol(accessToken: string) {
    const factors = await enrolTotp(mfa, accessToken, password);
    handedOut.push(factors.secret, ...factors.recoveryCodes);
    return factors;
  }

  /** An email account with a confirmed address and TOTP on, signed out again. */
  async function accountWithTotp() {
    const email = `mfa-${accounts++}@example.com`;
    const first = await registerVerified(platform.running.grpcPort!, mail, email, password);
    const factors = await enrol(first!.tokens!.accessToken);
    expect((await auth.call("logout", {}, bearer(first!.tokens!.accessToken))).error).to.equal(undefined);
    return { email, userId: first!.user!.userId, ...factors };
  }

  /** Login's challenge for the account; from `clientIp` when given (through the trusted proxy). */
  async function challengeFor(email: string, clientIp?: string, device = newDevice()) {
    const { response, error } = await auth.call("login", { email, password, device }, clientIp ? { "x-forwarded-for": clientIp } : {});
    expect(error).to.equal(undefined);
    expect(response!.tokens, "no tokens on the password alone").to.equal(undefined);
    const challengeId = response!.mfaChallenge!.challengeId;
    handedOut.push(challengeId);
    return challengeId;
  }

  const verify = (challengeId: string, proof: { totpCode: string } | { recoveryCode: string }, clientIp?: string) =>
    mfa.call(
      "verifyMfa",
      { challengeId, proof: { factor: "totpCode" in proof ? { case: "totpCode", value: proof.totpCode } : { case: "recoveryCode", value: proof.recoveryCode } } },
      clientIp ? { "x-forwarded-for": clientIp } : {},
    );

  const mfaEvents = async (userId: string) =>
    (await platform.db.query<{ event: string; outcome: string; detail: Record<string, unknown> }>(
      "select event, outcome, detail from audit_event where user_id = $1 and (event like 'mfa.%' or event = 'sign_in') order by id",
      [userId],
    )).rows;

  const liveSessions = async (userId: string) =>
    (await platform.db.query<{ device_id: string; aal: number; mfa_time: Date | null }>(
      "select device_id, aal, mfa_time from session where user_id = $1 and revoke_time is null order by create_time",
      [userId],
    )).rows;

  it("answers a password sign-in with a challenge, and completes it with the app's code: tokens at aal 2 with amr pwd, otp, mfa", async () => {
    const { email, userId, secret } = await accountWithTotp();
    const device = newDevice();

    const login = await auth.call("login", { email, password, device });

    expect(login.error).to.equal(undefined);
    expect(login.response!.tokens).to.equal(undefined);
    expect(login.response!.user, "nothing about the account before the second factor").to.equal(undefined);
    expect(login.response!.sessionId).to.equal("");
    const challenge = login.response!.mfaChallenge!;
    handedOut.push(challenge.challengeId);
    expect(challenge.challengeId).to.match(/^[A-Za-z0-9_-]{43}$/);
    expect(challenge.factors).to.deep.equal(["totp", "recovery_code"]);
    const expiresIn = Number(challenge.expireTime!.seconds) - Date.now() / 1000;
    expect(expiresIn).to.be.within(200, 301);
    expect(await liveSessions(userId), "no session before the second factor").to.deep.equal([]);

    // The confirmation spent this step's code; the app's next one is inside the window.
    const code = codeOf(secret, 1);
    handedOut.push(code);
    const { response, error } = await verify(challenge.challengeId, { totpCode: code });

    expect(error).to.equal(undefined);
    handedOut.push(response!.tokens!.accessToken, response!.tokens!.refreshToken);
    expect(response!.user!.userId).to.equal(userId);
    const claims = claimsOf(response!.tokens!.accessToken);
    expect(claims).to.include({ sub: userId, sid: response!.sessionId, did: device.deviceId, aal: 2, mfa: true });
    expect(claims.amr).to.have.members(["pwd", "otp", "mfa"]);
    expect(claims.mfa_time).to.be.closeTo(Date.now() / 1000, 60);
    const [session] = await liveSessions(userId);
    expect(session).to.include({ device_id: device.deviceId, aal: 2 });
    expect(session!.mfa_time!.getTime() / 1000).to.be.closeTo(claims.mfa_time, 1);
    expect((await mfaEvents(userId)).slice(-3).map((e) => [e.event, e.outcome, e.detail.method])).to.deep.equal([
      ["mfa.challenge_issued", "success", "pwd"],
      ["mfa.challenge_verified", "success", "pwd"],
      ["sign_in", "success", "pwd"],
    ]);
  });

  it("works the same through the Connect door, as a browser calls it", async () => {
    const { email, secret } = await accountWithTotp();

    const login = await connectCall(platform.running.httpPort!, "/portcullis.v1.AuthService/Login", { email, password, device: { deviceId: "browser-1", deviceType: "DEVICE_TYPE_WEB", deviceName: "Firefox" } });

    expect(login.status, login.text).to.equal(200);
    expect(login.json).not.to.have.property("tokens");
    expect(login.json.mfaChallenge.factors).to.deep.equal(["totp", "recovery_code"]);
    handedOut.push(login.json.mfaChallenge.challengeId);
    const code = codeOf(secret, 1);
    handedOut.push(code);
    const verified = await connectCall(platform.running.httpPort!, "/portcullis.v1.MfaService/VerifyMfa", { challengeId: login.json.mfaChallenge.challengeId, proof: { totpCode: code } });

    expect(verified.status, verified.text).to.equal(200);
    handedOut.push(verified.json.tokens.accessToken, verified.json.tokens.refreshToken);
    const claims = claimsOf(verified.json.tokens.accessToken);
    expect(claims).to.include({ aal: 2, did: "browser-1" });
    expect(claims.amr).to.include.members(["pwd", "otp"]);
  });

  it("answers a phone sign-in with a challenge too, and signs in the device that gave the code", async () => {
    const phone = newPhone();
    const first = await signInByPhone(platform.running.grpcPort!, sms, phone);
    const userId = first!.user!.userId;
    const { secret } = await enrol(first!.tokens!.accessToken);
    const device = { deviceId: `phone-${devices++}`, deviceType: DeviceType.ANDROID, deviceName: "Pixel" };
    expect((await auth.call("sendOtp", { phoneNumber: phone })).error).to.equal(undefined);

    const otp = await auth.call("verifyOtp", { phoneNumber: phone, code: sms.codeFor(phone), device });

    expect(otp.error).to.equal(undefined);
    expect(otp.response!.tokens).to.equal(undefined);
    expect(otp.response!.newUser).to.equal(false);
    expect(otp.response!.mfaChallenge!.factors).to.deep.equal(["totp", "recovery_code"]);
    handedOut.push(otp.response!.mfaChallenge!.challengeId);
    expect((await liveSessions(userId)).map((s) => s.device_id), "only the first sign-in's session").to.have.length(1);

    const code = codeOf(secret, 1);
    handedOut.push(code);
    const { response, error } = await verify(otp.response!.mfaChallenge!.challengeId, { totpCode: code });

    expect(error).to.equal(undefined);
    handedOut.push(response!.tokens!.accessToken, response!.tokens!.refreshToken);
    const claims = claimsOf(response!.tokens!.accessToken);
    expect(claims).to.include({ aal: 2, did: device.deviceId });
    expect(claims.amr).to.include.members(["sms", "otp", "mfa"]);
    expect((await liveSessions(userId)).at(-1)).to.include({ device_id: device.deviceId, aal: 2 });
    expect((await mfaEvents(userId)).find((e) => e.event === "mfa.challenge_issued")!.detail.method).to.equal("otp");
  });

  it("signs in once with a recovery code, which then no longer works", async () => {
    const { email, userId, recoveryCodes } = await accountWithTotp();
    const recoveryCode = recoveryCodes[0]!;

    const first = await verify(await challengeFor(email), { recoveryCode });

    expect(first.error).to.equal(undefined);
    handedOut.push(first.response!.tokens!.accessToken, first.response!.tokens!.refreshToken);
    const claims = claimsOf(first.response!.tokens!.accessToken);
    expect(claims.aal).to.equal(2);
    expect(claims.amr).to.have.members(["pwd", "rc", "mfa"]);
    expect((await mfaEvents(userId)).map((e) => e.event)).to.include("mfa.recovery_code_used");

    const again = await verify(await challengeFor(email), { recoveryCode });

    expect(again.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(again.error!)).to.deep.equal(["proof.recovery_code"]);
    expect((await mfaEvents(userId)).at(-1)).to.deep.include({ event: "mfa.challenge_verified", outcome: "failure" });
  });

  it("mails the owner to make new recovery codes once a sign-in leaves two or fewer", async () => {
    const { email, recoveryCodes } = await accountWithTotp();
    const notices = () => mail.mailsTo(email).filter((m) => m.subject.includes("recovery codes"));

    for (const recoveryCode of recoveryCodes.slice(0, 7)) expect((await verify(await challengeFor(email), { recoveryCode })).error).to.equal(undefined);
    await platform.running.app!.settled();
    expect(notices(), "three left: no notice yet").to.deep.equal([]);

    expect((await verify(await challengeFor(email), { recoveryCode: recoveryCodes[7]! })).error).to.equal(undefined);
    await platform.running.app!.settled();

    expect(notices()).to.have.length(1);
    expect(notices()[0]!.text).to.contain("only 2 are left");
    for (const code of recoveryCodes) expect(notices()[0]!.text).not.to.contain(code);
  });

  it("refuses a challenge from another IP address than the password came from, and still takes it from the first", async () => {
    const { email, userId, secret } = await accountWithTotp();
    const challengeId = await challengeFor(email, "198.51.100.7");
    const code = codeOf(secret, 1);
    handedOut.push(code);

    const elsewhere = await verify(challengeId, { totpCode: code }, "203.0.113.9");

    expect(elsewhere.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect(reasonOf(elsewhere.error!)).to.equal("MFA_CHALLENGE_INVALID");
    expect((await mfaEvents(userId)).at(-1)).to.deep.include({ event: "mfa.challenge_verified", outcome: "failure" });
    expect((await mfaEvents(userId)).at(-1)!.detail.reason).to.equal("other_ip");

    const fromFirst = await verify(challengeId, { totpCode: code }, "198.51.100.7");
    expect(fromFirst.error).to.equal(undefined);
    handedOut.push(fromFirst.response!.tokens!.accessToken, fromFirst.response!.tokens!.refreshToken);
  });

  it(`counts attempts atomically: of 12 wrong codes at once, ${maxAttempts} are heard, and then not even the right one`, async () => {
    const { email, userId, secret } = await accountWithTotp();
    const challengeId = await challengeFor(email);

    const answers = await Promise.all(Array.from({ length: 12 }, () => verify(challengeId, { totpCode: wrongCodeOf(secret) })));

    const codes = answers.map((answer) => answer.error?.code);
    expect(codes.filter((code) => code === grpc.status.INVALID_ARGUMENT)).to.have.length(maxAttempts);
    expect(codes.filter((code) => code === grpc.status.UNAUTHENTICATED)).to.have.length(12 - maxAttempts);
    const [row] = (await platform.db.query("select attempts, close_time from mfa_challenge where user_id = $1", [userId])).rows;
    expect(row.attempts).to.equal(maxAttempts);
    expect(row.close_time, "closed by its last attempt").not.to.equal(null);

    const right = codeOf(secret, 1);
    handedOut.push(right);
    const late = await verify(challengeId, { totpCode: right });
    expect(reasonOf(late.error!)).to.equal("MFA_CHALLENGE_INVALID");
    expect(await liveSessions(userId)).to.deep.equal([]);
  });

  it("refuses a challenge used already, without spending the code offered", async () => {
    const { email, userId, secret, recoveryCodes } = await accountWithTotp();
    const challengeId = await challengeFor(email);
    const code = codeOf(secret, 1);
    handedOut.push(code);
    const first = await verify(challengeId, { totpCode: code });
    expect(first.error).to.equal(undefined);
    handedOut.push(first.response!.tokens!.accessToken, first.response!.tokens!.refreshToken);

    const again = await verify(challengeId, { recoveryCode: recoveryCodes[0]! });

    expect(again.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    expect(reasonOf(again.error!)).to.equal("MFA_CHALLENGE_INVALID");
    const unused = (await platform.db.query("select count(*)::int as n from recovery_code where user_id = $1 and use_time is null", [userId])).rows[0].n;
    expect(unused).to.equal(10);
    expect(await liveSessions(userId)).to.have.length(1);
  });

  it("refuses an expired challenge, and a challenge id it never gave", async () => {
    const { email, userId, recoveryCodes } = await accountWithTotp();
    const challengeId = await challengeFor(email);
    await platform.db.query("update mfa_challenge set expire_time = now() - interval '1 second' where user_id = $1", [userId]);

    const expired = await verify(challengeId, { recoveryCode: recoveryCodes[0]! });
    const unknown = await verify("A".repeat(43), { recoveryCode: recoveryCodes[0]! });
    const malformed = await verify("not-a-challenge", { recoveryCode: recoveryCodes[0]! });

    expect(reasonOf(expired.error!)).to.equal("MFA_CHALLENGE_INVALID");
    expect((await mfaEvents(userId)).at(-1)!.detail.reason).to.equal("expired");
    expect(reasonOf(unknown.error!)).to.equal("MFA_CHALLENGE_INVALID");
    expect(malformed.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(malformed.error!)).to.deep.equal(["challenge_id"]);
  });

  it("keeps aal 2 and the factor's time through a refresh", async () => {
    const { email, secret } = await accountWithTotp();
    const code = codeOf(secret, 1);
    handedOut.push(code);
    const signedIn = await verify(await challengeFor(email), { totpCode: code });
    expect(signedIn.error).to.equal(undefined);
    const before = claimsOf(signedIn.response!.tokens!.accessToken);

    const refreshed = await auth.call("refreshToken", { refreshToken: signedIn.response!.tokens!.refreshToken });

    expect(refreshed.error).to.equal(undefined);
    handedOut.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);
    handedOut.push(refreshed.response!.tokens!.accessToken, refreshed.response!.tokens!.refreshToken);
    const after = claimsOf(refreshed.response!.tokens!.accessToken);
    expect(after).to.include({ aal: 2, mfa: true, mfa_time: before.mfa_time, sid: before.sid });
    expect(after.amr).to.include.members(["pwd", "mfa"]);
  });

  it("signs accounts without TOTP in as before: tokens at once, aal 1, and a refresh that says so", async () => {
    const email = `plain-${accounts++}@example.com`;
    const login = await registerVerified(platform.running.grpcPort!, mail, email, password);
    const byPhone = await signInByPhone(platform.running.grpcPort!, sms, newPhone());
    handedOut.push(login!.tokens!.accessToken, login!.tokens!.refreshToken, byPhone!.tokens!.accessToken, byPhone!.tokens!.refreshToken);

    expect(login!.mfaChallenge).to.equal(undefined);
    const byPassword = claimsOf(login!.tokens!.accessToken);
    expect(byPassword).to.include({ aal: 1 });
    expect(byPassword).not.to.have.any.keys("mfa", "mfa_time");
    expect(byPassword.amr).to.deep.equal(["pwd"]);
    expect(byPhone!.mfaChallenge).to.equal(undefined);
    expect(claimsOf(byPhone!.tokens!.accessToken)).to.include({ aal: 1 });
    expect(claimsOf(byPhone!.tokens!.accessToken).amr).to.have.members(["otp", "sms"]);

    const refreshed = await auth.call("refreshToken", { refreshToken: login!.tokens!.refreshToken });
    handedOut.push(refreshed.response!.tokens!.accessToken, refreshed.response!.tokens!.refreshToken);
    expect(claimsOf(refreshed.response!.tokens!.accessToken)).to.include({ aal: 1 }).and.not.to.have.any.keys("mfa", "mfa_time");
  });
});
