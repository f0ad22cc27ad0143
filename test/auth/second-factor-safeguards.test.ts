import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { Writable } from "node:stream";
import { createLogger } from "../../services/platform/logger.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";
import { fieldsOf, grpcClient, reasonOf } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { startPlatform } from "../support/platform.js";
import { bearer, newPhone, registerVerified, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";
import { codeOf, enrolTotp, secondFactorRateLimits, wrongCodeOf } from "../support/totp.js";
import { until } from "../support/until.js";

const password = "copper meadow drifting 19";
const failureBudget = 3;
let accounts = 0;

const totpProof = (value: string) => ({ proof: { factor: { case: "totpCode" as const, value } } });
const recoveryProof = (value: string) => ({ proof: { factor: { case: "recoveryCode" as const, value } } });

/** The review's findings on second factors, each pinned down: who may turn TOTP on, what a check spends, who is told. */
describe("Second-factor safeguards", () => {
  const mail = new MailInbox();
  const sms = new SmsInbox();
  const handedOut: string[] = [];
  const platform = platformForSuite({
    inboxes: [mail, sms],
    secrets: handedOut,
    env: {
      MFA_FAILURE_BUDGET: String(failureBudget),
      RATE_LIMITS: secondFactorRateLimits,
    },
  });
  const auth = platform.client(AuthService);
  const mfa = platform.client(MfaService);

  /** A verified email account, signed in: its token says it has no second factor. */
  async function signedIn() {
    const email = `guard-${accounts++}@example.com`;
    const login = (await registerVerified(platform.running.grpcPort!, mail, email, password))!;
    handedOut.push(login.tokens!.accessToken, login.tokens!.refreshToken);
    return { email, userId: login.user!.userId, accessToken: login.tokens!.accessToken };
  }

  async function enrol(accessToken: string) {
    const factors = await enrolTotp(mfa, accessToken, password);
    handedOut.push(factors.secret, ...factors.recoveryCodes);
    return factors;
  }

  const subjects = (email: string) => mail.mailsTo(email).map((m) => m.subject);
  const changePassword = (client: typeof auth, accessToken: string) =>
    client.call("changePassword", { currentPassword: password, newPassword: "an entirely new passphrase" }, bearer(accessToken));

  it("drops a second factor set up before the address was proved, once a password reset proves it", async () => {
    const { email, userId, accessToken } = await signedIn();
    // As EMAIL_VERIFICATION=optional leaves it: whoever registered the address may not own it.
    await platform.db.query("update app_user set email_verify_time = null where id = $1", [userId]);
    await enrol(accessToken);
    expect((await auth.call("requestPasswordReset", { email })).error).to.equal(undefined);
    await platform.running.app!.settled();
    const code = mail.codeFor(email);
    handedOut.push(code);
    expect((await auth.call("resetPassword", { email, code, newPassword: "the owner's own passphrase" })).error).to.equal(undefined);

    const owner = await auth.call("login", { email, password: "the owner's own passphrase", device: { deviceId: "owner", deviceType: DeviceType.WEB, deviceName: "Laptop" } });
    expect(owner.response?.mfaChallenge, "no factor of the registrant's stands in the way").to.equal(undefined);
    expect(owner.response?.tokens?.accessToken).to.be.a("string");
    handedOut.push(owner.response!.tokens!.accessToken, owner.response!.tokens!.refreshToken);
    const { rows } = await platform.db.query("select detail->'second_factor_removed' as removed from audit_event where event = 'password.reset' and user_id = $1", [userId]);
    expect(rows).to.deep.equal([{ removed: true }]);
  });

  it("asks a token issued before TOTP was turned on to step up, on this instance and on one started afterwards", async () => {
    const { accessToken } = await signedIn();
    await enrol(accessToken);

    const refused = await changePassword(auth, accessToken);
    expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(reasonOf(refused.error!)).to.equal("STEP_UP_REQUIRED");

    // A new instance learns of the enrolment from Postgres as it catches up.
    const later = await startPlatform(platform.env, platform.logLines);
    const laterAuth = grpcClient(AuthService, later.grpcPort!);
    try {
      const refusedThere = await changePassword(laterAuth, accessToken);
      expect(refusedThere.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(reasonOf(refusedThere.error!)).to.equal("STEP_UP_REQUIRED");
    } finally {
      laterAuth.close();
      await later.stop();
    }
  });

  it("turns TOTP on only with the current password, and mails the owner when it is turned on and off", async () => {
    const { email, userId, accessToken } = await signedIn();
    const enrolled = await mfa.call("enrollTotp", {}, bearer(accessToken));
    const secret = enrolled.response!.secret;
    handedOut.push(secret);

    const without = await mfa.call("confirmTotp", { code: codeOf(secret) }, bearer(accessToken));
    expect(without.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(without.error!)).to.deep.equal(["current_password"]);
    const wrong = await mfa.call("confirmTotp", { code: codeOf(secret), currentPassword: "not the password" }, bearer(accessToken));
    expect(wrong.error).to.not.equal(undefined);
    expect((await platform.db.query("select confirm_time from totp_factor where user_id = $1", [userId])).rows[0].confirm_time).to.equal(null);

    const confirmed = await mfa.call("confirmTotp", { code: codeOf(secret), currentPassword: password }, bearer(accessToken));
    expect(confirmed.error).to.equal(undefined);
    handedOut.push(...confirmed.response!.recoveryCodes);
    await until(() => subjects(email).some((s) => s.endsWith("two-step sign-in turned on")));

    const disabled = await mfa.call("disableTotp", recoveryProof(confirmed.response!.recoveryCodes[0]!), bearer(accessToken));
    expect(disabled.error).to.equal(undefined);
    await until(() => subjects(email).some((s) => s.endsWith("two-step sign-in turned off")));
  });

  it("asks an account without a password for a recent sign-in before turning TOTP on", async () => {
    const phone = newPhone();
    const signedInByPhone = (await signInByPhone(platform.running.grpcPort!, sms, phone))!;
    const accessToken = signedInByPhone.tokens!.accessToken;
    handedOut.push(accessToken, signedInByPhone.tokens!.refreshToken);
    const secret = (await mfa.call("enrollTotp", {}, bearer(accessToken))).response!.secret;
    handedOut.push(secret);
    await platform.db.query("update session set create_time = now() - interval '1 hour' where id = $1", [signedInByPhone.sessionId]);

    const stale = await mfa.call("confirmTotp", { code: codeOf(secret) }, bearer(accessToken));

    expect(stale.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    expect(reasonOf(stale.error!)).to.equal("FRESH_SIGN_IN_REQUIRED");
  });

  it("spends only the winning factor when two answers to one challenge race", async () => {
    const { email, userId, accessToken } = await signedIn();
    const { recoveryCodes } = await enrol(accessToken);
    const login = await auth.call("login", { email, password, device: { deviceId: "race", deviceType: DeviceType.WEB, deviceName: "Laptop" } });
    const challengeId = login.response!.mfaChallenge!.challengeId;
    handedOut.push(challengeId);

    const answers = await Promise.all(
      [recoveryCodes[1]!, recoveryCodes[2]!].map((code) => mfa.call("verifyMfa", { challengeId, ...recoveryProof(code) })),
    );

    expect(answers.filter((answer) => !answer.error)).to.have.length(1);
    for (const answer of answers) if (answer.response) handedOut.push(answer.response.tokens!.accessToken, answer.response.tokens!.refreshToken);
    expect(answers.find((answer) => answer.error)!.error!.code).to.equal(grpc.status.UNAUTHENTICATED);
    const unused = await platform.db.query("select count(*)::int as n from recovery_code where user_id = $1 and use_time is null", [userId]);
    expect(unused.rows[0].n, "the loser's code is still good").to.equal(9);
  });

  it("disables TOTP with one code and no step-up; a replayed code is refused without spending the budget", async () => {
    const { userId, accessToken } = await signedIn();
    const { secret, recoveryCodes } = await enrol(accessToken);
    const code = codeOf(secret, 1);
    handedOut.push(code);
    expect((await mfa.call("stepUp", totpProof(code), bearer(accessToken))).error).to.equal(undefined);

    const replayed = await mfa.call("disableTotp", totpProof(code), bearer(accessToken));

    expect(replayed.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(replayed.error!)).to.deep.equal(["proof.totp_code"]);
    expect((await platform.db.query("select count(*)::int as n from mfa_failure where user_id = $1", [userId])).rows[0].n).to.equal(0);
    // The token is the plain one of the sign-in: one current code is all DisableTotp asks.
    const disabled = await mfa.call("disableTotp", recoveryProof(recoveryCodes[0]!), bearer(accessToken));
    expect(disabled.error).to.equal(undefined);
    expect((await platform.db.query("select count(*)::int as n from totp_factor where user_id = $1", [userId])).rows[0].n).to.equal(0);
  });

  it("tells of few recovery codes after StepUp, never after RegenerateRecoveryCodes", async () => {
    const { email, userId, accessToken } = await signedIn();
    const { recoveryCodes } = await enrol(accessToken);
    const stepUpWith = async (code: string) => expect((await mfa.call("stepUp", recoveryProof(code), bearer(accessToken))).error).to.equal(undefined);
    const fewCodesMails = () => subjects(email).filter((s) => s.endsWith("make new recovery codes")).length;

    // Seven used leave three; regenerating with the eighth would leave two, which a sign-in would warn of.
    for (const code of recoveryCodes.slice(0, 7)) await stepUpWith(code);
    const regenerated = await mfa.call("regenerateRecoveryCodes", recoveryProof(recoveryCodes[7]!), bearer(accessToken));
    expect(regenerated.error).to.equal(undefined);
    const fresh = regenerated.response!.recoveryCodes;
    handedOut.push(...fresh);
    for (const code of fresh.slice(0, 8)) await stepUpWith(code);

    // The notice mails, then audits, off the call's path: wait for the whole task, not the mail.
    await platform.running.app!.settled();
    expect(fewCodesMails(), "only the step-up that left two").to.equal(1);
    const { rows } = await platform.db.query("select detail from audit_event where user_id = $1 and event = 'mfa.recovery_codes_low' order by id", [userId]);
    expect(rows.map((row) => row.detail.remaining)).to.deep.equal([2]);
  });

  it("locks the factors out once the budget is spent, mails the owner once, and doubles the lockout on the next exhaustion that day", async () => {
    const { email, userId, accessToken } = await signedIn();
    const { secret } = await enrol(accessToken);
    const wrong = wrongCodeOf(secret);
    const tryWrong = () => mfa.call("stepUp", totpProof(wrong), bearer(accessToken));

    for (let i = 0; i < failureBudget; i++) expect((await tryWrong()).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    const locked = await tryWrong();
    expect(locked.error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    expect(Number(locked.error!.metadata.get("retry-after")[0])).to.be.within(14 * 60, 15 * 60);
    await until(() => subjects(email).some((s) => s.endsWith("too many wrong sign-in codes")));

    // As if the first lockout and the failures' window had passed, within the same day.
    await platform.db.query("update mfa_failure set fail_time = fail_time - interval '16 minutes' where user_id = $1", [userId]);
    await platform.db.query("update mfa_lockout set lock_time = lock_time - interval '16 minutes', until_time = until_time - interval '16 minutes' where user_id = $1", [userId]);
    for (let i = 0; i < failureBudget; i++) expect((await tryWrong()).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    const lockedLonger = await tryWrong();
    expect(Number(lockedLonger.error!.metadata.get("retry-after")[0])).to.be.within(29 * 60, 30 * 60);

    await until(() => subjects(email).filter((s) => s.endsWith("too many wrong sign-in codes")).length === 2);
    const { rows } = await platform.db.query("select detail from audit_event where user_id = $1 and event = 'mfa.budget_exhausted' order by id", [userId]);
    expect(rows.map((row) => row.detail.lock_seconds)).to.deep.equal([15 * 60, 30 * 60]);
  });

  it("redacts second-factor fields and the captcha header from log lines", () => {
    const lines: string[] = [];
    const logger = createLogger("info", new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) }) as never);
    const secrets = { totpCode: "123456", recoveryCodes: ["abcde-fghij"], otpauthUri: "otpauth://totp/x?secret=S", qrCodeSvg: "<svg/>", challengeId: "C".repeat(43) };

    logger.info({ request: secrets, headers: { "x-captcha-token": "captcha-token-value" } }, "a call");

    for (const value of ["123456", "abcde-fghij", "otpauth://", "<svg/>", "C".repeat(43), "captcha-token-value"]) expect(lines.join("")).to.not.include(value);
  });
});
