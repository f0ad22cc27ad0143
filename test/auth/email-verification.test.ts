import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, fieldsOf, grpcErrorDetails } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { bearer } from "../support/sign-in.js";
import { claimsOf } from "../support/service-accounts.js";
import { platformForSuite } from "../support/suite-platform.js";

const device = { deviceId: "browser-1", deviceType: DeviceType.WEB, deviceName: "Browser" };
const password = "a passphrase to verify";
const generous = [
  "register_ip=1000/3600", "register_email=1000/3600", "verify_email_ip=1000/3600", "verify_email_email=1000/3600",
  "login_ip=1000/900", "login_email=1000/900", "refresh_ip=1000/60", "refresh_user=1000/60",
].join(",");
let addresses = 0;
const newAddress = (name = "ana") => `${name}.${addresses++}@example.com`;

/** What a refusal says, for comparing two of them. */
const answerOf = (error: grpc.ServiceError | undefined) => error && { code: error.code, message: error.details, details: grpcErrorDetails(error) };

describe("Email verification", () => {
  const inbox = new MailInbox();
  const secrets: string[] = [password];
  const platform = platformForSuite({ inboxes: [inbox], secrets, env: { ACCOUNT_CODE_MAX_ATTEMPTS: "3", RATE_LIMITS: generous } });
  const auth = platform.client(AuthService);

  const register = (email: string, pass = password) => auth.call("register", { email, password: pass, device });
  const login = (email: string, pass = password) => auth.call("login", { email, password: pass, device });
  /** The code of the latest mail to the address, remembered as a secret. */
  const codeFor = (email: string) => {
    const code = inbox.codeFor(email);
    secrets.push(code);
    return code;
  };
  const tokenFor = (email: string) => {
    const token = inbox.tokenFor(email);
    secrets.push(token);
    return token;
  };
  const accountsWith = async (email: string) => (await platform.db.query("select count(*)::int as n from app_user where email = $1", [email])).rows[0].n;

  describe("Register", () => {
    it("answers a new and a taken address alike, never with tokens, and mails the taken one's owner a notice instead of a code", async () => {
      const email = newAddress();
      const first = await register(email);
      const again = await register(email, "another passphrase entirely");
      for (const answer of [first, again]) {
        expect(answer.error).to.equal(undefined);
        expect(answer.response!.tokens, "no tokens").to.equal(undefined);
        expect(answer.response!.user, "no user").to.equal(undefined);
        expect(answer.response!.sessionId).to.equal("");
        expect(Number(answer.response!.verificationExpireTime!.seconds)).to.be.greaterThan(Date.now() / 1000);
      }
      const within = Number(again.response!.verificationExpireTime!.seconds - first.response!.verificationExpireTime!.seconds);
      expect(within, "the same expiry, to the clock's progress").to.be.within(0, 5);

      expect(inbox.mailsTo(email).map((mail) => mail.subject)).to.deep.equal([
        "Portcullis: confirm your email address",
        "Portcullis: someone tried to register with your address",
      ]);
      expect(inbox.latest(email).text, "the notice carries no code").not.to.match(/\b\d{6}\b/);
      expect(await accountsWith(email)).to.equal(1);
      const { rows } = await platform.db.query(
        `select a.outcome, a.detail->>'reason' as reason from audit_event a join app_user u on u.id = a.user_id
         where u.email = $1 and a.event = 'register' order by a.id`,
        [email],
      );
      expect(rows, "both under the owner's account").to.deep.equal([
        { outcome: "success", reason: null },
        { outcome: "denied", reason: "email_taken" },
      ]);
    });

    it("refuses a weak password alike for a new and a taken address", async () => {
      const taken = newAddress();
      expect((await register(taken)).error).to.equal(undefined);
      const onTaken = await register(taken, "password123");
      const onNew = await register(newAddress(), "password123");
      expect(onTaken.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(onTaken.error!)).to.deep.equal(["password"]);
      expect(answerOf(onNew.error)).to.deep.equal(answerOf(onTaken.error));
    });

    it("makes one account of two registrations racing for one address, and each is answered", async () => {
      const email = newAddress("race");
      const answers = await Promise.all([register(email), register(email, "a different passphrase")]);
      expect(answers.map((answer) => answer.error)).to.deep.equal([undefined, undefined]);
      expect(await accountsWith(email)).to.equal(1);
      expect(inbox.mailsTo(email).map((mail) => mail.subject).sort()).to.deep.equal([
        "Portcullis: confirm your email address",
        "Portcullis: someone tried to register with your address",
      ]);
    });

    it("commits the account before mailing, and holds no lock on it while the provider takes its time", async () => {
      const email = newAddress("slow");
      const held = inbox.hold();
      const registering = register(email);
      try {
        await held.arrived;
        await platform.db.query("begin");
        // NOWAIT: a row still locked by Register's transaction would fail this at once.
        const { rows } = await platform.db.query("select id from app_user where email = $1 for update nowait", [email]);
        expect(rows, "committed, and not locked").to.have.length(1);
      } finally {
        await platform.db.query("rollback");
        held.release();
      }
      expect((await registering).error).to.equal(undefined);
      expect((await auth.call("verifyEmail", { email, code: codeFor(email) })).response?.email).to.equal(email);
    });

    it("answers UNAVAILABLE when the mail provider fails, keeps nothing, and the address registers afterwards", async () => {
      const email = newAddress("outage");
      inbox.failing = true;
      try {
        const refused = await register(email);
        expect(refused.error?.code).to.equal(grpc.status.UNAVAILABLE);
        expect(await accountsWith(email), "no account left behind").to.equal(0);
        const { rows } = await platform.db.query("select count(*)::int as n from contact_verification where address = $1", [email]);
        expect(rows[0].n, "nor a code").to.equal(0);
      } finally {
        inbox.failing = false;
      }
      expect((await register(email)).error).to.equal(undefined);
      expect((await auth.call("verifyEmail", { email, code: codeFor(email) })).response?.email).to.equal(email);

      inbox.failing = true;
      try {
        expect((await register(email)).error?.code, "the notice to a taken address fails alike").to.equal(grpc.status.UNAVAILABLE);
      } finally {
        inbox.failing = false;
      }
    });
  });

  describe("VerifyEmail", () => {
    it("confirms the address by its code once", async () => {
      const email = newAddress();
      await register(email.toUpperCase());
      const code = codeFor(email);
      const confirmed = await auth.call("verifyEmail", { email: ` ${email.toUpperCase()} `, code });
      expect(confirmed.response?.email).to.equal(email);
      const again = await auth.call("verifyEmail", { email, code });
      expect(again.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(again.error!)).to.deep.equal(["code"]);
      const { rows } = await platform.db.query("select email_verify_time is not null as verified from app_user where email = $1", [email]);
      expect(rows).to.deep.equal([{ verified: true }]);
    });

    it("confirms the address by its link once; of two uses at once exactly one succeeds", async () => {
      const email = newAddress();
      await register(email);
      const token = tokenFor(email);
      const answers = await Promise.all([auth.call("verifyEmail", { token }), auth.call("verifyEmail", { token })]);
      expect(answers.filter((answer) => answer.response?.email === email)).to.have.lengthOf(1);
      const refused = answers.find((answer) => answer.error)!.error!;
      expect(refused.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(refused)).to.deep.equal(["token"]);
      expect((await auth.call("verifyEmail", { token })).error?.code, "used").to.equal(grpc.status.INVALID_ARGUMENT);
      expect((await auth.call("verifyEmail", { email, code: codeFor(email) })).error?.code, "the code went with the link").to.equal(grpc.status.INVALID_ARGUMENT);
    });

    it("counts wrong codes: after the last attempt even the right code and the link are refused", async () => {
      const email = newAddress();
      await register(email);
      const code = codeFor(email);
      const token = tokenFor(email);
      const wrong = code === "000000" ? "111111" : "000000";
      const lastRow = (await platform.db.query("select coalesce(max(id), 0) as id from audit_event")).rows[0].id;
      for (let i = 0; i < 3; i++) expect((await auth.call("verifyEmail", { email, code: wrong })).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect((await auth.call("verifyEmail", { email, code })).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect((await auth.call("verifyEmail", { token })).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      // Whoever typed them is not the account's owner's to see: the rows name no account, and the address only masked.
      const { rows } = await platform.db.query(
        `select user_id, detail->>'email' as email, detail->>'attempt' as attempt, detail->>'closed' as closed from audit_event
         where id > $1 and event = 'email.verify' and detail->>'reason' = 'wrong_code' order by id`,
        [lastRow],
      );
      const masked = `${email[0]}***@example.com`;
      expect(rows).to.deep.equal([
        { user_id: null, email: masked, attempt: "1", closed: "false" },
        { user_id: null, email: masked, attempt: "2", closed: "false" },
        { user_id: null, email: masked, attempt: "3", closed: "true" },
      ]);
    });

    it("answers an unknown address exactly as a wrong code", async () => {
      const email = newAddress();
      await register(email);
      const code = codeFor(email);
      const wrong = code === "000000" ? "111111" : "000000";
      const onKnown = await auth.call("verifyEmail", { email, code: wrong });
      const onUnknown = await auth.call("verifyEmail", { email: newAddress("nobody"), code: wrong });
      expect(onKnown.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(answerOf(onUnknown.error)).to.deep.equal(answerOf(onKnown.error));
    });

    it("asks for the address with a code, naming the field", async () => {
      const refused = await auth.call("verifyEmail", { code: "123456" });
      expect(refused.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(refused.error!)).to.deep.equal(["email"]);
    });
  });

  describe("Login", () => {
    it("refuses an unconfirmed address only with the right password, resends at most once a minute, and signs in once confirmed", async () => {
      const email = newAddress();
      await register(email);
      const firstCode = codeFor(email);

      const wrong = await login(email, "not the passphrase at all");
      expect(wrong.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(wrong.error!), ErrorInfoSchema)?.reason).to.equal("INVALID_CREDENTIALS");

      const unverified = await login(email);
      expect(unverified.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(detailOf(grpcErrorDetails(unverified.error!), ErrorInfoSchema)).to.deep.include({ reason: "EMAIL_NOT_VERIFIED", domain: "portcullis.dev" });
      expect(inbox.countFor(email), "the mail sent at registration is recent: none resent").to.equal(1);

      await platform.db.query("update contact_verification set create_time = now() - interval '2 minutes' where address = $1", [email]);
      expect((await login(email)).error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(inbox.countFor(email), "resent").to.equal(2);
      const resent = codeFor(email);
      if (resent !== firstCode) {
        expect((await auth.call("verifyEmail", { email, code: firstCode })).error?.code, "the first code was replaced").to.equal(grpc.status.INVALID_ARGUMENT);
      }
      expect((await auth.call("verifyEmail", { email, code: resent })).error).to.equal(undefined);

      const signedIn = await login(email);
      expect(signedIn.error).to.equal(undefined);
      secrets.push(signedIn.response!.tokens!.accessToken, signedIn.response!.tokens!.refreshToken);
      expect(claimsOf(signedIn.response!.tokens!.accessToken).email_verified).to.equal(true);
      expect(signedIn.response!.user!.emailVerified).to.equal(true);
      const refreshed = await auth.call("refreshToken", { refreshToken: signedIn.response!.tokens!.refreshToken });
      expect(claimsOf(refreshed.response!.tokens!.accessToken).email_verified, "refreshed tokens say so too").to.equal(true);
      const profile = await auth.call("getProfile", {}, bearer(refreshed.response!.tokens!.accessToken));
      expect(profile.response?.user?.emailVerified).to.equal(true);

      const { rows } = await platform.db.query(
        `select a.detail->>'reason' as reason, a.detail->>'resent' as resent from audit_event a join app_user u on u.id = a.user_id
         where u.email = $1 and a.event = 'sign_in' and a.outcome = 'denied' order by a.id`,
        [email],
      );
      expect(rows).to.deep.equal([
        { reason: "email_not_verified", resent: "false" },
        { reason: "email_not_verified", resent: "true" },
      ]);
    });

    it("forgets the wrong passwords typed before the right one, though it refuses the unconfirmed address", async () => {
      const email = newAddress();
      await register(email);
      for (let i = 0; i < 2; i++) expect((await login(email, "not the passphrase at all")).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      const counts = async () =>
        (
          await platform.db.query(
            `select failed_logins, (select count(*)::int from password_failure f where f.user_id = u.id) as sources from app_user u where email = $1`,
            [email],
          )
        ).rows;
      expect(await counts()).to.deep.equal([{ failed_logins: 2, sources: 1 }]);
      const refused = await login(email);
      expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)?.reason).to.equal("EMAIL_NOT_VERIFIED");
      expect(await counts(), "as after a sign-in").to.deep.equal([{ failed_logins: 0, sources: 0 }]);
    });

    it("still answers EMAIL_NOT_VERIFIED when the resent mail cannot be sent", async () => {
      const email = newAddress();
      await register(email);
      await platform.db.query("update contact_verification set create_time = now() - interval '2 minutes' where address = $1", [email]);
      inbox.failing = true;
      try {
        const refused = await login(email);
        expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)?.reason).to.equal("EMAIL_NOT_VERIFIED");
      } finally {
        inbox.failing = false;
      }
      expect((await auth.call("verifyEmail", { email, code: codeFor(email) })).error, "the first code still works").to.equal(undefined);
    });
  });

  it("goes from Register to a signed-in session through the gateway with Connect JSON, confirming by link", async () => {
    const port = platform.running.httpPort!;
    const email = newAddress("web");
    const webDevice = { deviceId: "web-1", deviceType: "DEVICE_TYPE_WEB" };
    const registered = await connectCall(port, "/portcullis.v1.AuthService/Register", { email, password, device: webDevice });
    expect(registered.status).to.equal(200);
    expect(Object.keys(registered.json)).to.deep.equal(["verificationExpireTime"]);

    const early = await connectCall(port, "/portcullis.v1.AuthService/Login", { email, password, device: webDevice });
    expect([early.status, early.json.code, early.json.details[0].debug.reason]).to.deep.equal([400, "failed_precondition", "EMAIL_NOT_VERIFIED"]);

    const wrong = await connectCall(port, "/portcullis.v1.AuthService/VerifyEmail", { token: "not-the-token" });
    expect([wrong.status, wrong.json.details[0].debug.fieldViolations[0].field]).to.deep.equal([400, "token"]);
    const verified = await connectCall(port, "/portcullis.v1.AuthService/VerifyEmail", { token: tokenFor(email) });
    expect([verified.status, verified.json]).to.deep.equal([200, { email }]);

    const login = await connectCall(port, "/portcullis.v1.AuthService/Login", { email, password, device: webDevice });
    expect(login.status).to.equal(200);
    secrets.push(login.json.tokens.accessToken, login.json.tokens.refreshToken);
    expect(login.json.user.emailVerified).to.equal(true);
    expect(claimsOf(login.json.tokens.accessToken).email_verified).to.equal(true);
  });
});

describe("Email verification, optional", () => {
  const inbox = new MailInbox();
  const platform = platformForSuite({ inboxes: [inbox], env: { EMAIL_VERIFICATION: "optional", RATE_LIMITS: generous } });
  const auth = platform.client(AuthService);

  it("signs an unconfirmed address in, its token saying email_verified false, and true once confirmed", async () => {
    const email = newAddress("optional");
    expect((await auth.call("register", { email, password, device })).error).to.equal(undefined);
    const before = await auth.call("login", { email, password, device });
    expect(before.error).to.equal(undefined);
    expect(claimsOf(before.response!.tokens!.accessToken).email_verified).to.equal(false);
    expect(before.response!.user!.emailVerified).to.equal(false);

    expect((await auth.call("verifyEmail", { email, code: inbox.codeFor(email) })).error).to.equal(undefined);
    const after = await auth.call("login", { email, password, device });
    expect(claimsOf(after.response!.tokens!.accessToken).email_verified).to.equal(true);
  });
});
