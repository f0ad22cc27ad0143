import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, fieldsOf, grpcErrorDetails, reasonOf } from "../support/clients.js";
import { MailInbox, type ReceivedMail } from "../support/mail-inbox.js";
import { bearer } from "../support/sign-in.js";
import { platformForSuite } from "../support/suite-platform.js";

const device = { deviceId: "device-1", deviceType: DeviceType.IOS, deviceName: "Test phone" };
const password = "the first passphrase";
const newPassword = "a brand new passphrase";
const wrongCode = (right: string) => String((Number(right) + 1) % 1_000_000).padStart(6, "0");
let accounts = 0;


/**
 * RequestPasswordReset and ResetPassword against real servers, reading the
 * mails as their owner would from a webhook inbox. Lockouts take 3 wrong
 * passwords (from one source, or from all together); a code allows 3 tries,
 * and an account 4 wrong codes a day; an address may ask for 3 resets an hour.
 */
describe("Password reset", () => {
  const inbox = new MailInbox();
  const secrets: string[] = [password, newPassword];
  const platform = platformForSuite({
    inboxes: [inbox],
    secrets,
    env: {
      EMAIL_VERIFICATION: "optional",
      PASSWORD_LOCKOUT_THRESHOLD: "3",
      PASSWORD_LOCKOUT_ACCOUNT_THRESHOLD: "3",
      ACCOUNT_CODE_MAX_ATTEMPTS: "3",
      ACCOUNT_CODE_FAILURE_BUDGET: "4",
      RATE_LIMITS: [
        "register_ip=1000/3600", "register_email=1000/3600", "login_ip=1000/900", "login_email=1000/900", "refresh_ip=1000/60",
        "password_reset_ip=1000/3600", "password_reset_global=1000/60", "password_reset_email=3/3600",
        "reset_password_ip=1000/3600", "reset_password_email=1000/3600",
      ].join(","),
    },
  });
  const auth = platform.client(AuthService);

  const newAddress = () => `reset.${accounts++}@example.com`;

  /** Registers and signs in a password account; its tokens are those of the one sign-in. */
  async function newAccount() {
    const email = newAddress();
    expect((await auth.call("register", { email, password, device })).error).to.equal(undefined);
    const { response, error } = await auth.call("login", { email, password, device });
    expect(error).to.equal(undefined);
    secrets.push(response!.tokens!.accessToken, response!.tokens!.refreshToken);
    return { email, userId: response!.user!.userId, tokens: response!.tokens! };
  }

  const resetMails = (address: string): ReceivedMail[] => inbox.mailsTo(address).filter((m) => m.subject.endsWith("reset your password"));

  /** The secrets of the latest reset mail to `address`, once the mails sent after the answers have gone. */
  async function mailed(address: string) {
    await platform.running.app!.settled();
    const mail = resetMails(address).at(-1);
    if (!mail) throw new Error(`no reset mail to ${address}`);
    const secret = { code: /\b(\d{6})\b/.exec(mail.text)![1]!, token: /#token=([\w-]+)/.exec(mail.text)![1]! };
    secrets.push(secret.code, secret.token);
    return secret;
  }

  async function requestReset(email: string) {
    const { error } = await auth.call("requestPasswordReset", { email });
    expect(error).to.equal(undefined);
    return await mailed(email);
  }

  const login = (email: string, pass: string) => auth.call("login", { email, password: pass, device });

  /** The code that confirms the address, mailed at registration. */
  function confirmationCode(address: string): string {
    const mail = inbox.mailsTo(address).find((m) => m.subject.endsWith("confirm your email address"))!;
    const code = /\b(\d{6})\b/.exec(mail.text)![1]!;
    secrets.push(code);
    return code;
  }

  const liveSessions = async (userId: string): Promise<number> =>
    (await platform.db.query("select count(*)::int as n from session where user_id = $1 and revoke_time is null", [userId])).rows[0].n;

  describe("asking for a reset", () => {
    it("answers a known, an unknown and a disabled account's address alike over gRPC, and mails only the known one", async () => {
      const known = await newAccount();
      const disabled = await newAccount();
      await platform.db.query("update app_user set disable_time = now() where id = $1", [disabled.userId]);
      const unknown = newAddress();

      const answers = [];
      for (const email of [known.email, unknown, disabled.email]) answers.push(await auth.call("requestPasswordReset", { email }));
      for (const answer of answers) expect(answer).to.deep.equal(answers[0]);
      expect(answers[0]!.error).to.equal(undefined);

      await platform.running.app!.settled();
      expect(resetMails(known.email)).to.have.length(1);
      expect(inbox.countFor(unknown)).to.equal(0);
      expect(resetMails(disabled.email)).to.have.length(0);
      const { rows } = await platform.db.query(
        "select user_id, outcome, detail from audit_event where event = 'password.reset_requested' and (user_id = any($1) or detail->>'reason' = 'unknown_email') order by id",
        [[known.userId, disabled.userId]],
      );
      expect(rows.map((r) => [r.user_id, r.outcome, r.detail.reason])).to.deep.include.members([
        [known.userId, "success", undefined],
        [null, "denied", "unknown_email"],
        [disabled.userId, "denied", "account_disabled"],
      ]);
      await mailed(known.email);
    });

    it("answers a known and an unknown address alike through the Connect gateway, and mails only the known one", async () => {
      const known = await newAccount();
      const unknown = newAddress();
      const path = "/portcullis.v1.AuthService/RequestPasswordReset";
      const [forKnown, forUnknown] = [await connectCall(platform.running.httpPort!, path, { email: known.email }), await connectCall(platform.running.httpPort!, path, { email: unknown })];
      expect([forKnown.status, forKnown.text]).to.deep.equal([200, "{}"]);
      expect([forUnknown.status, forUnknown.text]).to.deep.equal([forKnown.status, forKnown.text]);
      await platform.running.app!.settled();
      expect(resetMails(known.email)).to.have.length(1);
      expect(inbox.countFor(unknown)).to.equal(0);
      await mailed(known.email);
    });

    it("refuses a malformed address on both doors, naming the field email", async () => {
      const { error } = await auth.call("requestPasswordReset", { email: "not an address" });
      expect(error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(error!)).to.deep.equal(["email"]);
      const http = await connectCall(platform.running.httpPort!, "/portcullis.v1.AuthService/RequestPasswordReset", { email: "ana@@example.com" });
      expect(http.status).to.equal(400);
      expect(http.json.details[0].debug.fieldViolations.map((v: { field: string }) => v.field)).to.deep.equal(["email"]);
    });

    it("answers alike when the mail cannot be sent, and leaves no reset behind", async () => {
      const { email, userId } = await newAccount();
      inbox.failing = true;
      try {
        // Only an account's address gets a mail, so an error here would tell who has an account.
        expect((await auth.call("requestPasswordReset", { email })).error).to.equal(undefined);
        expect((await auth.call("requestPasswordReset", { email: newAddress() })).error).to.equal(undefined);
        await platform.running.app!.settled();
      } finally {
        inbox.failing = false;
      }
      const { rows } = await platform.db.query("select count(*)::int as n from password_reset where user_id = $1", [userId]);
      expect(rows[0].n, "no reset row").to.equal(0);
      const audited = await platform.db.query("select outcome, detail->>'reason' as reason from audit_event where event = 'password.reset_requested' and user_id = $1 order by id", [userId]);
      expect(audited.rows).to.deep.equal([
        { outcome: "success", reason: null },
        { outcome: "failure", reason: "mail_undelivered" },
      ]);
    });

    it("allows an address 3 requests an hour, refusing the 4th alike for a known and an unknown address", async () => {
      const { email } = await newAccount();
      const unknown = newAddress();
      const refusals = [];
      for (const address of [email, unknown]) {
        for (let i = 0; i < 3; i++) expect((await auth.call("requestPasswordReset", { email: address })).error, `request ${i + 1}`).to.equal(undefined);
        refusals.push((await auth.call("requestPasswordReset", { email: address })).error!);
      }
      for (const refused of refusals) {
        expect(refused.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
        expect(detailOf(grpcErrorDetails(refused), ErrorInfoSchema)?.metadata.rule).to.equal("password_reset_email");
      }
      await platform.running.app!.settled();
      expect(resetMails(email)).to.have.length(3);
      await mailed(email);
    });
  });

  describe("resetting", () => {
    it("by the link's token: the old password fails, the new one works, old tokens are refused at once, and a notice arrives", async () => {
      const { email, userId, tokens } = await newAccount();
      const sessions = await liveSessions(userId);
      const { token } = await requestReset(email);

      const { response, error } = await auth.call("resetPassword", { token, newPassword });
      expect(error).to.equal(undefined);
      expect(response!.revokedSessionCount).to.equal(sessions).and.to.be.greaterThan(0);

      const profile = await auth.call("getProfile", {}, bearer(tokens.accessToken));
      expect(profile.error?.code, "the old access token, at the very next call").to.equal(grpc.status.UNAUTHENTICATED);
      expect(reasonOf(profile.error!)).to.equal("SESSION_REVOKED");
      expect((await auth.call("refreshToken", { refreshToken: tokens.refreshToken })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect((await login(email, password)).error?.code, "the old password").to.equal(grpc.status.UNAUTHENTICATED);
      const signedIn = await login(email, newPassword);
      expect(signedIn.error, "the new password").to.equal(undefined);
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);

      await platform.running.app!.settled();
      expect(inbox.mailsTo(email).map((mail) => mail.subject)).to.include("Portcullis: your password was changed");
      const { rows } = await platform.db.query("select detail from audit_event where event = 'password.reset' and user_id = $1", [userId]);
      expect(rows).to.deep.equal([{ detail: { via: "link", revoked_sessions: sessions, unlocked: false, second_factor_removed: false } }]);
    });

    it("by the code with the address through the Connect gateway, with the same effects", async () => {
      const { email, userId, tokens } = await newAccount();
      const sessions = await liveSessions(userId);
      const path = (method: string) => `/portcullis.v1.AuthService/${method}`;
      expect((await connectCall(platform.running.httpPort!, path("RequestPasswordReset"), { email })).status).to.equal(200);
      const { code } = await mailed(email);

      const reset = await connectCall(platform.running.httpPort!, path("ResetPassword"), { email: email.toUpperCase(), code, newPassword });
      expect(reset.status).to.equal(200);
      expect(reset.json.revokedSessionCount).to.equal(sessions);

      const profile = await connectCall(platform.running.httpPort!, path("GetProfile"), {}, bearer(tokens.accessToken));
      expect([profile.status, profile.json.details[0].debug.reason]).to.deep.equal([401, "SESSION_REVOKED"]);
      expect((await connectCall(platform.running.httpPort!, path("RefreshToken"), { refreshToken: tokens.refreshToken })).status).to.equal(401);
      expect((await connectCall(platform.running.httpPort!, path("Login"), { email, password, device: { deviceId: "w" } })).status).to.equal(401);
      const signedIn = await connectCall(platform.running.httpPort!, path("Login"), { email, password: newPassword, device: { deviceId: "w" } });
      expect(signedIn.status).to.equal(200);
      secrets.push(signedIn.json.tokens.accessToken, signedIn.json.tokens.refreshToken);
      await platform.running.app!.settled();
      expect(inbox.mailsTo(email).map((mail) => mail.subject)).to.include("Portcullis: your password was changed");
    });

    it("confirms the address the mail reached", async () => {
      const { email, userId } = await newAccount();
      await platform.db.query("update app_user set email_verify_time = null where id = $1", [userId]);
      const { code } = await requestReset(email);
      expect((await auth.call("resetPassword", { email, code, newPassword })).error).to.equal(undefined);
      const { rows } = await platform.db.query("select email_verify_time is not null as verified from app_user where id = $1", [userId]);
      expect(rows).to.deep.equal([{ verified: true }]);
    });

    it("lets a locked-out account sign in again, ending every lock", async () => {
      const { email, userId } = await newAccount();
      for (let i = 0; i < 3; i++) await login(email, "not the passphrase at all");
      expect((await login(email, password)).error?.code, "locked, even with the right password").to.equal(grpc.status.UNAUTHENTICATED);

      const { code } = await requestReset(email);
      expect((await auth.call("resetPassword", { email, code, newPassword })).error).to.equal(undefined);
      const signedIn = await login(email, newPassword);
      expect(signedIn.error).to.equal(undefined);
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);

      const locks = await platform.db.query(
        `select (select locked_until from app_user where id = $1) as account_lock,
                (select count(*)::int from password_failure where user_id = $1) as sources`,
        [userId],
      );
      expect(locks.rows).to.deep.equal([{ account_lock: null, sources: 0 }]);
      const audited = await platform.db.query("select detail->'unlocked' as unlocked from audit_event where event = 'password.reset' and user_id = $1", [userId]);
      expect(audited.rows).to.deep.equal([{ unlocked: true }]);
    });

    it("uses a token once", async () => {
      const { email } = await newAccount();
      const { token } = await requestReset(email);
      expect((await auth.call("resetPassword", { token, newPassword })).error).to.equal(undefined);
      const again = await auth.call("resetPassword", { token, newPassword: "yet another passphrase" });
      expect(again.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(again.error!)).to.deep.equal(["token"]);
      expect((await login(email, newPassword)).error, "the first reset's password stands").to.equal(undefined);
    });

    it("lets exactly one of two parallel resets with one token through", async () => {
      const { email, userId } = await newAccount();
      const { token } = await requestReset(email);
      const results = await Promise.all([
        auth.call("resetPassword", { token, newPassword }),
        auth.call("resetPassword", { token, newPassword: "a rival new passphrase" }),
      ]);
      secrets.push("a rival new passphrase");
      expect(results.filter((r) => !r.error)).to.have.length(1);
      const loser = results.find((r) => r.error)!.error!;
      expect(loser.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(loser)).to.deep.equal(["token"]);
      const { rows } = await platform.db.query(
        "select outcome, detail->>'reason' as reason from audit_event where event = 'password.reset' and user_id = $1 order by outcome",
        [userId],
      );
      expect(rows).to.deep.equal([
        { outcome: "failure", reason: "used_or_expired" },
        { outcome: "success", reason: null },
      ]);
    });

    it("resets all the same when the password-changed notice cannot be sent, logging it", async () => {
      const { email } = await newAccount();
      const { token } = await requestReset(email);
      inbox.failing = true;
      try {
        expect((await auth.call("resetPassword", { token, newPassword })).error).to.equal(undefined);
        await platform.running.app!.settled();
      } finally {
        inbox.failing = false;
      }
      expect(platform.logLines.join("")).to.contain("password-changed notice failed");
      const signedIn = await login(email, newPassword);
      expect(signedIn.error).to.equal(undefined);
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);
    });

    it("refuses an expired token as an unknown one", async () => {
      const { email, userId } = await newAccount();
      const { token } = await requestReset(email);
      await platform.db.query("update password_reset set expire_time = now() - interval '1 second' where user_id = $1", [userId]);
      const expired = await auth.call("resetPassword", { token, newPassword });
      const madeUp = await auth.call("resetPassword", { token: "A".repeat(43), newPassword });
      expect(expired.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(expired.error?.details).to.equal(madeUp.error?.details);
      expect(fieldsOf(expired.error!)).to.deep.equal(["token"]);
    });

    it("keeps one reset open: a new request refuses the earlier mail's link and code, and once used its own are refused too", async () => {
      const { email } = await newAccount();
      const first = await requestReset(email);
      const second = await requestReset(email);
      const early = await auth.call("resetPassword", { token: first.token, newPassword });
      expect(early.error?.code, "the earlier mail's link").to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(early.error!)).to.deep.equal(["token"]);
      if (first.code !== second.code) {
        const earlyCode = await auth.call("resetPassword", { email, code: first.code, newPassword });
        expect(earlyCode.error?.code, "the earlier mail's code").to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(earlyCode.error!)).to.deep.equal(["code"]);
      }
      expect((await auth.call("resetPassword", { token: second.token, newPassword })).error, "the latest mail").to.equal(undefined);
      const lateCode = await auth.call("resetPassword", { email, code: second.code, newPassword: "yet another passphrase" });
      expect(lateCode.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(lateCode.error!)).to.deep.equal(["code"]);
    });

    it("refuses the right code after the last wrong try, while the link still works", async () => {
      const { email } = await newAccount();
      const { code, token } = await requestReset(email);
      for (let i = 0; i < 3; i++) {
        const { error } = await auth.call("resetPassword", { email, code: wrongCode(code), newPassword });
        expect(error?.code, `try ${i + 1}`).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(error!)).to.deep.equal(["code"]);
      }
      const right = await auth.call("resetPassword", { email, code, newPassword });
      expect(right.error?.code, "the right code, too late").to.equal(grpc.status.INVALID_ARGUMENT);
      expect((await auth.call("resetPassword", { token, newPassword })).error, "the unguessable link").to.equal(undefined);
    });

    it("counts parallel wrong codes against one limit", async () => {
      const { email, userId } = await newAccount();
      const { code } = await requestReset(email);
      await Promise.all(Array.from({ length: 6 }, () => auth.call("resetPassword", { email, code: wrongCode(code), newPassword })));
      const { rows } = await platform.db.query("select attempts from password_reset where user_id = $1", [userId]);
      expect(rows).to.deep.equal([{ attempts: 3 }]);
      expect((await auth.call("resetPassword", { email, code, newPassword })).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    });

    it("refuses every code, right ones too, once the account has had 4 wrong ones today across resets and confirmation; links still work", async () => {
      const { email, userId } = await newAccount();
      const confirmation = confirmationCode(email);
      const first = await requestReset(email);
      let wrong: grpc.ServiceError | undefined;
      for (let i = 0; i < 3; i++) wrong = (await auth.call("resetPassword", { email, code: wrongCode(first.code), newPassword })).error;
      expect((await auth.call("verifyEmail", { email, code: wrongCode(confirmation) })).error?.code, "the 4th").to.equal(grpc.status.INVALID_ARGUMENT);

      const second = await requestReset(email);
      const right = await auth.call("resetPassword", { email, code: second.code, newPassword });
      expect([right.error?.code, right.error?.details], "a new reset's right code, answered as a wrong one").to.deep.equal([wrong?.code, wrong?.details]);
      expect((await auth.call("verifyEmail", { email, code: confirmation })).error?.code, "the confirmation's right code").to.equal(grpc.status.INVALID_ARGUMENT);
      const { rows } = await platform.db.query("select count(*)::int as n from code_failure where user_id = $1", [userId]);
      expect(rows[0].n, "the refused right codes spent nothing").to.equal(4);

      expect((await auth.call("resetPassword", { token: second.token, newPassword })).error, "the unguessable link").to.equal(undefined);
    });

    it("accepts codes again once the wrong ones are a day old", async () => {
      const { email, userId } = await newAccount();
      const confirmation = confirmationCode(email);
      const { code } = await requestReset(email);
      for (let i = 0; i < 3; i++) await auth.call("resetPassword", { email, code: wrongCode(code), newPassword });
      const next = await requestReset(email);
      await auth.call("resetPassword", { email, code: wrongCode(next.code), newPassword });
      expect((await auth.call("verifyEmail", { email, code: confirmation })).error?.code, "the budget is spent").to.equal(grpc.status.INVALID_ARGUMENT);

      await platform.db.query("update code_failure set fail_time = fail_time - interval '1 day' where user_id = $1", [userId]);
      expect((await auth.call("verifyEmail", { email, code: confirmation })).response?.email).to.equal(email);
      expect((await platform.running.app!.cleanup.run()).codeFailures, "and the cleanup forgets them").to.be.at.least(4);
    });

    it("answers a code for an unknown address as a wrong code for a known one", async () => {
      const { email } = await newAccount();
      const { code } = await requestReset(email);
      const known = await auth.call("resetPassword", { email, code: wrongCode(code), newPassword });
      const unknown = await auth.call("resetPassword", { email: newAddress(), code, newPassword });
      expect(known.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect([unknown.error?.code, unknown.error?.details]).to.deep.equal([known.error?.code, known.error?.details]);
    });

    it("refuses a weak new password or one holding the address, naming new_password, and leaves the code usable", async () => {
      const { email } = await newAccount();
      const { code, token } = await requestReset(email);
      for (const weak of ["password123", "short", `${email.split("@")[0]}-forever`]) {
        for (const request of [{ email, code, newPassword: weak }, { token, newPassword: weak }]) {
          const { error } = await auth.call("resetPassword", request);
          expect(error?.code, weak).to.equal(grpc.status.INVALID_ARGUMENT);
          expect(fieldsOf(error!), weak).to.deep.equal(["new_password"]);
        }
      }
      expect((await auth.call("resetPassword", { email, code, newPassword })).error).to.equal(undefined);
    });

    it("refuses a still-open token once its account is disabled, as a wrong one", async () => {
      const { email, userId } = await newAccount();
      const { token, code } = await requestReset(email);
      await platform.db.query("update app_user set disable_time = now() where id = $1", [userId]);
      const byToken = await auth.call("resetPassword", { token, newPassword });
      const madeUp = await auth.call("resetPassword", { token: "B".repeat(43), newPassword });
      expect(byToken.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(byToken.error?.details).to.equal(madeUp.error?.details);
      expect((await auth.call("resetPassword", { email, code, newPassword })).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      await platform.db.query("update app_user set disable_time = null where id = $1", [userId]);
      const signedIn = await login(email, password);
      expect(signedIn.error, "the password is unchanged").to.equal(undefined);
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);
    });

    it("needs the code or the token, and the address with a code", async () => {
      const neither = await auth.call("resetPassword", { email: "ana@example.com", newPassword });
      expect(neither.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      const noAddress = await auth.call("resetPassword", { code: "123456", newPassword });
      expect(noAddress.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(noAddress.error!)).to.deep.equal(["email"]);
    });
  });

  it("purges used and expired resets", async () => {
    const { email } = await newAccount();
    const { token } = await requestReset(email);
    expect((await auth.call("resetPassword", { token, newPassword })).error).to.equal(undefined);
    const removed = await platform.running.app!.cleanup.run();
    expect(removed.passwordResets).to.be.greaterThan(0);
    const { rows } = await platform.db.query("select count(*)::int as n from password_reset where close_time is not null or expire_time < now()");
    expect(rows[0].n).to.equal(0);
  });
});
