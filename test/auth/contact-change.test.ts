import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { connectCall, fieldsOf, reasonOf } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { bearer, newPhone, registerVerified, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

const device = { deviceId: "browser-1", deviceType: DeviceType.WEB, deviceName: "Browser" };
const password = "a passphrase for changes";
let addresses = 0;
const newAddress = (name = "ana") => `${name}.${addresses++}@example.com`;

describe("Changing the email address and phone number", () => {
  const mail = new MailInbox();
  const sms = new SmsInbox();
  const secrets: string[] = [password];
  const platform = platformForSuite({
    inboxes: [mail, sms],
    secrets,
    env: {
      RATE_LIMITS: [
        "register_ip=1000/3600", "verify_email_ip=1000/3600", "login_ip=1000/900", "login_email=1000/900",
        "otp_send_ip=1000/3600", "otp_verify_ip=1000/3600", "change_email_user=1000/3600", "change_phone_user=1000/3600",
      ].join(","),
    },
  });
  const auth = platform.client(AuthService);

  /** An email account, confirmed and signed in; its access token. */
  async function emailAccount(email = newAddress()) {
    const login = await registerVerified(platform.running.grpcPort!, mail, email, password);
    secrets.push(login!.tokens!.accessToken, login!.tokens!.refreshToken);
    return { email, userId: login!.user!.userId, token: login!.tokens!.accessToken };
  }

  async function phoneAccount(phone = newPhone()) {
    const signedIn = await signInByPhone(platform.running.grpcPort!, sms, phone);
    secrets.push(signedIn!.tokens!.accessToken, signedIn!.tokens!.refreshToken);
    return { phone, userId: signedIn!.user!.userId, token: signedIn!.tokens!.accessToken };
  }

  const login = (email: string) => auth.call("login", { email, password, device });
  const codeFor = (inbox: { codeFor(to: string): string }, to: string) => {
    const code = inbox.codeFor(to);
    secrets.push(code);
    return code;
  };
  const openVerifications = async (userId: string) =>
    (await platform.db.query("select count(*)::int as n from contact_verification where user_id = $1 and close_time is null", [userId])).rows[0].n;

  describe("ChangeEmail", () => {
    it("needs the current password, tells the old address, and moves sign-in to the new one only once it is confirmed", async () => {
      const { email, userId, token } = await emailAccount();
      const next = newAddress("next");

      const wrong = await auth.call("changeEmail", { newEmail: next, currentPassword: "not the passphrase" }, bearer(token));
      expect(wrong.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(wrong.error!)).to.deep.equal(["current_password"]);
      const failures = await platform.db.query("select failed_logins from app_user where id = $1", [userId]);
      expect(failures.rows, "counted toward the lockout").to.deep.equal([{ failed_logins: 1 }]);
      expect(mail.countFor(next), "nothing mailed").to.equal(0);

      const started = await auth.call("changeEmail", { newEmail: next.toUpperCase(), currentPassword: password }, bearer(token));
      expect(started.error).to.equal(undefined);
      expect(Number(started.response!.verificationExpireTime!.seconds)).to.be.greaterThan(Date.now() / 1000);
      expect(mail.latest(next).subject).to.equal("Portcullis: confirm your email address");
      const notice = mail.latest(email);
      expect(notice.subject).to.equal("Portcullis: your email address is being changed");
      expect(notice.text).to.contain(`n***@example.com`).and.not.to.contain(next);

      expect((await login(email)).error, "the old address signs in until the new one is confirmed").to.equal(undefined);
      expect((await login(next)).error?.code).to.equal(grpc.status.UNAUTHENTICATED);

      const confirmed = await auth.call("verifyEmail", { email: next, code: codeFor(mail, next) });
      expect(confirmed.response?.email).to.equal(next);
      expect((await login(email)).error?.code, "then only the new one").to.equal(grpc.status.UNAUTHENTICATED);
      const signedIn = await login(next);
      expect(signedIn.response?.user).to.deep.include({ userId, email: next, emailVerified: true });
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);

      const { rows } = await platform.db.query("select event, outcome from audit_event where user_id = $1 and event like 'email.%' order by id", [userId]);
      expect(rows).to.deep.equal([
        { event: "email.verify", outcome: "success" },
        { event: "email.change_requested", outcome: "success" },
        { event: "email.change", outcome: "success" },
      ]);
    });

    it("drops a change of address still waiting when the password is reset", async () => {
      const { email, token } = await emailAccount();
      const next = newAddress("intruder");
      expect((await auth.call("changeEmail", { newEmail: next, currentPassword: password }, bearer(token))).error).to.equal(undefined);
      const intruderCode = codeFor(mail, next);
      expect((await auth.call("requestPasswordReset", { email })).error).to.equal(undefined);
      await platform.running.app!.settled();
      const reset = await auth.call("resetPassword", { email, code: codeFor(mail, email), newPassword: "the owner's new passphrase" });
      expect(reset.error).to.equal(undefined);

      const late = await auth.call("verifyEmail", { email: next, code: intruderCode });
      expect(late.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect((await login(email)).error?.code, "the address stays the owner's").to.equal(grpc.status.UNAUTHENTICATED);
      const { rows } = await platform.db.query("select email from app_user where email = $1", [email]);
      expect(rows).to.have.length(1);
    });

    it("refuses to add an address or number to an account whose own address is not confirmed", async () => {
      const { userId, token } = await emailAccount();
      // As EMAIL_VERIFICATION=optional leaves an account whose registrant may not own the address.
      await platform.db.query("update app_user set email_verify_time = null where id = $1", [userId]);
      const phone = await auth.call("changePhoneNumber", { phoneNumber: newPhone(), currentPassword: password }, bearer(token));
      const address = await auth.call("changeEmail", { newEmail: newAddress(), currentPassword: password }, bearer(token));
      for (const { error } of [phone, address]) {
        expect(error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
        expect(reasonOf(error!)).to.equal("EMAIL_NOT_VERIFIED");
      }
    });

    it("closes the password resets mailed to the old address once the new one is confirmed", async () => {
      const { email, token } = await emailAccount();
      const next = newAddress("moved");
      expect((await auth.call("requestPasswordReset", { email })).error).to.equal(undefined);
      await platform.running.app!.settled();
      const resetCode = codeFor(mail, email);
      expect((await auth.call("changeEmail", { newEmail: next, currentPassword: password }, bearer(token))).error).to.equal(undefined);
      expect((await auth.call("verifyEmail", { email: next, code: codeFor(mail, next) })).error).to.equal(undefined);

      const reset = await auth.call("resetPassword", { email: next, code: resetCode, newPassword: "a passphrase from the old inbox" });
      expect(reset.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(reset.error!)).to.deep.equal(["code"]);
    });

    it("answers the same for another account's address, and VerifyEmail tells the conflict only to whoever proves the address", async () => {
      const owner = await emailAccount();
      const { email, token } = await emailAccount();
      const free = await auth.call("changeEmail", { newEmail: newAddress("free"), currentPassword: password }, bearer(token));
      const taken = await auth.call("changeEmail", { newEmail: owner.email, currentPassword: password }, bearer(token));
      expect(taken.error).to.equal(undefined);
      expect(Object.keys(taken.response!)).to.deep.equal(Object.keys(free.response!));

      const conflict = await auth.call("verifyEmail", { email: owner.email, code: codeFor(mail, owner.email) });
      expect(conflict.error?.code).to.equal(grpc.status.ALREADY_EXISTS);
      expect((await login(email)).error, "the address did not change").to.equal(undefined);
      expect((await login(owner.email)).response?.user?.userId, "nor did the owner's").to.equal(owner.userId);
    });

    it("refuses a malformed address and the account's own one, naming new_email", async () => {
      const { email, token } = await emailAccount();
      for (const newEmail of ["not an address", email.toUpperCase()]) {
        const refused = await auth.call("changeEmail", { newEmail, currentPassword: password }, bearer(token));
        expect(refused.error?.code, newEmail).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(refused.error!)).to.deep.equal(["new_email"]);
      }
    });

    it("answers UNAVAILABLE when the mail provider fails, and leaves no code open", async () => {
      const { userId, token } = await emailAccount();
      mail.failing = true;
      try {
        const refused = await auth.call("changeEmail", { newEmail: newAddress("outage"), currentPassword: password }, bearer(token));
        expect(refused.error?.code).to.equal(grpc.status.UNAVAILABLE);
      } finally {
        mail.failing = false;
      }
      expect(await openVerifications(userId)).to.equal(0);
    });

    it("keeps the change waiting before when the next one's mail cannot be sent", async () => {
      const { userId, token } = await emailAccount();
      const first = newAddress("first");
      expect((await auth.call("changeEmail", { newEmail: first, currentPassword: password }, bearer(token))).error).to.equal(undefined);
      const code = codeFor(mail, first);
      mail.failing = true;
      try {
        const refused = await auth.call("changeEmail", { newEmail: newAddress("second"), currentPassword: password }, bearer(token));
        expect(refused.error?.code).to.equal(grpc.status.UNAVAILABLE);
      } finally {
        mail.failing = false;
      }
      expect(await openVerifications(userId)).to.equal(1);
      expect((await auth.call("verifyEmail", { email: first, code })).response?.email, "the first change's code works again").to.equal(first);
      const { rows } = await platform.db.query("select outcome, detail->>'reason' as reason from audit_event where user_id = $1 and event = 'email.change_requested' order by id", [userId]);
      expect(rows).to.deep.equal([
        { outcome: "success", reason: null },
        { outcome: "success", reason: null },
        { outcome: "failure", reason: "mail_provider" },
      ]);
    });

    it("mails after committing, holding no lock on the account while the provider takes its time", async () => {
      const { userId, token } = await emailAccount();
      const next = newAddress("slow");
      const held = mail.hold();
      const changing = auth.call("changeEmail", { newEmail: next, currentPassword: password }, bearer(token));
      try {
        await held.arrived;
        await platform.db.query("begin");
        // NOWAIT: a row still locked by ChangeEmail's transaction would fail this at once.
        expect((await platform.db.query("select id from app_user where id = $1 for update nowait", [userId])).rows).to.have.length(1);
        expect(await openVerifications(userId), "the code is committed").to.equal(1);
      } finally {
        await platform.db.query("rollback");
        held.release();
      }
      expect((await changing).error).to.equal(undefined);
      expect((await auth.call("verifyEmail", { email: next, code: codeFor(mail, next) })).response?.email).to.equal(next);
    });

    it("adds an email to a phone account on a fresh sign-in, and asks a stale one to sign in again", async () => {
      const { userId, token } = await phoneAccount();
      const added = newAddress("added");
      expect((await auth.call("changeEmail", { newEmail: added }, bearer(token))).error).to.equal(undefined);
      expect(mail.countFor(added)).to.equal(1);
      expect((await auth.call("verifyEmail", { email: added, code: codeFor(mail, added) })).response?.email).to.equal(added);
      const profile = await auth.call("getProfile", {}, bearer(token));
      expect(profile.response?.user).to.deep.include({ email: added, emailVerified: true });

      await platform.db.query("update session set create_time = now() - interval '11 minutes' where user_id = $1", [userId]);
      const stale = await auth.call("changeEmail", { newEmail: newAddress("later") }, bearer(token));
      expect(stale.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(reasonOf(stale.error!)).to.equal("FRESH_SIGN_IN_REQUIRED");
    });

    it("works through the gateway with Connect JSON", async () => {
      const port = platform.running.httpPort!;
      const { token } = await emailAccount();
      const next = newAddress("web");
      const started = await connectCall(port, "/portcullis.v1.AuthService/ChangeEmail", { newEmail: next, currentPassword: password }, bearer(token));
      expect(started.status).to.equal(200);
      expect(Object.keys(started.json)).to.deep.equal(["verificationExpireTime"]);
      const refused = await connectCall(port, "/portcullis.v1.AuthService/ChangeEmail", { newEmail: next, currentPassword: "wrong!" }, bearer(token));
      expect([refused.status, refused.json.details[0].debug.fieldViolations[0].field]).to.deep.equal([400, "current_password"]);
      const token2 = mail.tokenFor(next);
      secrets.push(token2);
      const confirmed = await connectCall(port, "/portcullis.v1.AuthService/VerifyEmail", { token: token2 });
      expect([confirmed.status, confirmed.json]).to.deep.equal([200, { email: next }]);
      const profile = await connectCall(port, "/portcullis.v1.AuthService/GetProfile", {}, bearer(token));
      expect(profile.json.user.email).to.equal(next);
    });
  });

  describe("ChangePhoneNumber and VerifyPhoneNumber", () => {
    it("adds a phone number to an email account with a texted code, used once; the number then signs in to that account", async () => {
      const { userId, token } = await emailAccount();
      const phone = newPhone();
      const spelled = `${phone.slice(0, 3)} ${phone.slice(3, 7)} ${phone.slice(7)}`;
      const started = await auth.call("changePhoneNumber", { phoneNumber: spelled, currentPassword: password }, bearer(token));
      expect(started.error).to.equal(undefined);
      expect(started.response?.codeLength).to.equal(6);
      const code = codeFor(sms, phone);

      const wrong = await auth.call("verifyPhoneNumber", { code: code === "000000" ? "111111" : "000000" }, bearer(token));
      expect(wrong.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(wrong.error!)).to.deep.equal(["code"]);
      const verified = await auth.call("verifyPhoneNumber", { code }, bearer(token));
      expect(verified.response?.user).to.deep.include({ userId, phoneNumber: phone });
      expect((await auth.call("verifyPhoneNumber", { code }, bearer(token))).error?.code, "used").to.equal(grpc.status.INVALID_ARGUMENT);

      expect((await phoneAccount(phone)).userId, "the same account").to.equal(userId);
      const { rows } = await platform.db.query("select detail->>'phone' as phone from audit_event where user_id = $1 and event = 'phone.change' and outcome = 'success'", [
        userId,
      ]);
      expect(rows).to.deep.equal([{ phone: `${phone.slice(0, 3)}${"*".repeat(phone.length - 5)}${phone.slice(-2)}` }]);
    });

    it("refuses the wrong password and a number that is not valid, naming the field", async () => {
      const { token } = await emailAccount();
      const wrong = await auth.call("changePhoneNumber", { phoneNumber: newPhone(), currentPassword: "not the passphrase" }, bearer(token));
      expect(fieldsOf(wrong.error!)).to.deep.equal(["current_password"]);
      const invalid = await auth.call("changePhoneNumber", { phoneNumber: "+44 12", currentPassword: password }, bearer(token));
      expect(fieldsOf(invalid.error!)).to.deep.equal(["phone_number"]);
    });

    it("answers ALREADY_EXISTS at VerifyPhoneNumber for another account's number", async () => {
      const other = await phoneAccount();
      const { token } = await emailAccount();
      expect((await auth.call("changePhoneNumber", { phoneNumber: other.phone, currentPassword: password }, bearer(token))).error).to.equal(undefined);
      const conflict = await auth.call("verifyPhoneNumber", { code: codeFor(sms, other.phone) }, bearer(token));
      expect(conflict.error?.code).to.equal(grpc.status.ALREADY_EXISTS);
    });

    it("answers UNAVAILABLE when the SMS provider fails, and leaves no code open", async () => {
      const { userId, token } = await emailAccount();
      sms.failing = true;
      try {
        const refused = await auth.call("changePhoneNumber", { phoneNumber: newPhone(), currentPassword: password }, bearer(token));
        expect(refused.error?.code).to.equal(grpc.status.UNAVAILABLE);
      } finally {
        sms.failing = false;
      }
      expect(await openVerifications(userId)).to.equal(0);
    });

    it("changes a phone account's number on a fresh sign-in, through the gateway", async () => {
      const port = platform.running.httpPort!;
      const { userId, token } = await phoneAccount();
      const next = newPhone();
      const started = await connectCall(port, "/portcullis.v1.AuthService/ChangePhoneNumber", { phoneNumber: next }, bearer(token));
      expect(started.status).to.equal(200);
      const verified = await connectCall(port, "/portcullis.v1.AuthService/VerifyPhoneNumber", { code: codeFor(sms, next) }, bearer(token));
      expect([verified.status, verified.json.user.phoneNumber, verified.json.user.userId]).to.deep.equal([200, next, userId]);
    });
  });
});
