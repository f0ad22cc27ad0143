import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import * as OTPAuth from "otpauth";
import QRCode from "qrcode";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";
import { connectCall, fieldsOf, reasonOf } from "../support/clients.js";
import { bearer } from "../support/sign-in.js";
import { platformForSuite } from "../support/suite-platform.js";
import { codeOf, enrolTotp, wrongCodeOf } from "../support/totp.js";

const password = "violet staple orbit 42";
const failureBudget = 10;
let accounts = 0;
let devices = 0;

describe("TOTP and recovery codes", () => {
  /** Every secret and code handed out, none of which may reach a log line or an audit row. */
  const handedOut: string[] = [];
  /** Two instances on the same stores; the second for what must hold across instances. */
  const platform = platformForSuite({
    instances: 2,
    secrets: handedOut,
    env: {
      EMAIL_VERIFICATION: "optional",
      PRODUCT_NAME: "Acme Bank",
      MFA_FAILURE_BUDGET: String(failureBudget),
      RATE_LIMITS: ["register_ip=1000/60", "register_email=1000/60", "login_ip=1000/60", "login_email=1000/60", "mfa_user=1000/60"].join(","),
    },
  });
  const auth = platform.client(AuthService);
  const mfa = platform.client(MfaService);
  const otherMfa = platform.client(MfaService, 1);

  /** A new account, signed in (before any second factor, so with a plain token). */
  async function newAccount() {
    const email = `totp-${accounts++}@example.com`;
    const device = { deviceId: `device-${devices++}`, deviceType: DeviceType.WEB, deviceName: "Laptop" };
    const registered = await auth.call("register", { email, password, displayName: "Ana", device });
    expect(registered.error).to.equal(undefined);
    const { response, error } = await auth.call("login", { email, password, device });
    expect(error).to.equal(undefined);
    const accessToken = response!.tokens!.accessToken;
    return { email, userId: response!.user!.userId, accessToken, headers: bearer(accessToken) };
  }

  /** An account with TOTP on: its secret and recovery codes. */
  async function enrolledAccount() {
    const account = await newAccount();
    const factors = await enrolTotp(mfa, account.accessToken, password);
    handedOut.push(factors.secret, ...factors.recoveryCodes);
    return { ...account, ...factors };
  }

  const auditEvents = async (userId: string) =>
    (await platform.db.query<{ event: string; outcome: string; detail: Record<string, unknown> }>("select event, outcome, detail from audit_event where user_id = $1 and event like 'mfa.%' order by id", [userId])).rows;

  it("enrols with a code an authenticator app computes from the returned secret, and returns 10 recovery codes once", async () => {
    const { email, userId, headers } = await newAccount();

    const { response, error } = await mfa.call("enrollTotp", {}, headers);

    expect(error).to.equal(undefined);
    const secret = response!.secret;
    handedOut.push(secret);
    expect(OTPAuth.Secret.fromBase32(secret).bytes.length, "160 bits").to.equal(20);
    const uri = OTPAuth.URI.parse(response!.otpauthUri) as OTPAuth.TOTP;
    expect(uri).to.be.instanceOf(OTPAuth.TOTP);
    expect({ issuer: uri.issuer, label: uri.label, algorithm: uri.algorithm, digits: uri.digits, period: uri.period, secret: uri.secret.base32 }).to.deep.equal({
      issuer: "Acme Bank", label: email, algorithm: "SHA1", digits: 6, period: 30, secret,
    });
    expect(response!.qrCodeSvg).to.match(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(response!.qrCodeSvg, "the QR code of the URI").to.equal(await QRCode.toString(response!.otpauthUri, { type: "svg", errorCorrectionLevel: "M" }));
    expect((await platform.db.query("select confirm_time from totp_factor where user_id = $1", [userId])).rows).to.deep.equal([{ confirm_time: null }]);

    const code = codeOf(secret);
    handedOut.push(code);
    const confirmed = await connectCall(platform.running.httpPort!, "/portcullis.v1.MfaService/ConfirmTotp", { code, currentPassword: password }, headers);

    expect(confirmed.status, confirmed.text).to.equal(200);
    const recoveryCodes: string[] = confirmed.json.recoveryCodes;
    handedOut.push(...recoveryCodes);
    expect(recoveryCodes).to.have.length(10);
    expect(new Set(recoveryCodes).size).to.equal(10);
    for (const recoveryCode of recoveryCodes) expect(recoveryCode).to.match(/^[a-z2-7]{5}-[a-z2-7]{5}$/);
    const stored = (await platform.db.query("select code_hash from recovery_code where user_id = $1", [userId])).rows;
    expect(stored).to.have.length(10);
    expect(JSON.stringify(stored), "stored as hashes").not.to.contain(recoveryCodes[0]!.replace("-", ""));
    expect((await auditEvents(userId)).map((e) => [e.event, e.outcome])).to.deep.equal([
      ["mfa.totp_enrollment_started", "success"],
      ["mfa.totp_enrolled", "success"],
    ]);
  });

  it("keeps the secret sealed in the database", async () => {
    const { userId, secret } = await enrolledAccount();

    const [row] = (await platform.db.query("select secret_sealed from totp_factor where user_id = $1", [userId])).rows;

    expect(row.secret_sealed).not.to.contain(secret);
    expect(Buffer.from(row.secret_sealed, "base64").toString("latin1")).not.to.contain(secret);
    expect(Buffer.from(row.secret_sealed, "base64").includes(Buffer.from(OTPAuth.Secret.fromBase32(secret).bytes)), "nor its bytes").to.equal(false);
  });

  it("refuses a wrong confirmation code, naming the field, and leaves TOTP off", async () => {
    const { userId, headers } = await newAccount();
    const { response } = await mfa.call("enrollTotp", {}, headers);
    handedOut.push(response!.secret);

    const { error } = await mfa.call("confirmTotp", { code: wrongCodeOf(response!.secret), currentPassword: password }, headers);

    expect(error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(error!)).to.deep.equal(["code"]);
    expect((await platform.db.query("select confirm_time from totp_factor where user_id = $1", [userId])).rows).to.deep.equal([{ confirm_time: null }]);
    expect((await platform.db.query("select count(*)::int as n from recovery_code where user_id = $1", [userId])).rows[0].n).to.equal(0);
    expect((await auditEvents(userId)).at(-1)).to.deep.include({ event: "mfa.factor_failed", outcome: "failure" });
  });

  it("replaces an unconfirmed secret when enrolment starts again, and refuses to enrol while TOTP is on", async () => {
    const { headers } = await newAccount();
    const first = (await mfa.call("enrollTotp", {}, headers)).response!.secret;
    const second = (await mfa.call("enrollTotp", {}, headers)).response!.secret;
    handedOut.push(first, second);
    expect(second).not.to.equal(first);

    const withOld = await mfa.call("confirmTotp", { code: codeOf(first), currentPassword: password }, headers);
    expect(withOld.error?.code, "the first secret is gone").to.equal(grpc.status.INVALID_ARGUMENT);
    expect((await mfa.call("confirmTotp", { code: codeOf(second), currentPassword: password }, headers)).error).to.equal(undefined);

    const again = await mfa.call("enrollTotp", {}, headers);
    expect(again.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    expect(reasonOf(again.error!)).to.equal("TOTP_ALREADY_ENABLED");
    expect(again.error!.details).to.equal("TOTP is already on; disable it first");
  });

  it("asks for EnrollTotp before ConfirmTotp", async () => {
    const { headers } = await newAccount();

    const { error } = await mfa.call("confirmTotp", { code: "123456", currentPassword: password }, headers);

    expect(error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    expect(reasonOf(error!)).to.equal("TOTP_NOT_ENROLLED");
  });

  it("accepts a TOTP code once: the same code again is refused, also on another instance", async () => {
    const { headers, secret } = await enrolledAccount();
    // The confirmation used this step's code; the app's next code is within the window.
    const next = codeOf(secret, 1);
    handedOut.push(next);

    const first = await mfa.call("regenerateRecoveryCodes", { proof: { factor: { case: "totpCode", value: next } } }, headers);
    const replayHere = await mfa.call("regenerateRecoveryCodes", { proof: { factor: { case: "totpCode", value: next } } }, headers);
    const replayThere = await otherMfa.call("regenerateRecoveryCodes", { proof: { factor: { case: "totpCode", value: next } } }, headers);

    expect(first.error).to.equal(undefined);
    handedOut.push(...first.response!.recoveryCodes);
    for (const replay of [replayHere, replayThere]) {
      expect(replay.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(replay.error!)).to.deep.equal(["proof.totp_code"]);
    }
  });

  it("accepts the same new code only once when it arrives at two instances at the same moment", async () => {
    const { headers, secret } = await enrolledAccount();
    const next = codeOf(secret, 1);
    handedOut.push(next);
    const proof = { factor: { case: "totpCode" as const, value: next } };

    const answers = await Promise.all([mfa, otherMfa, mfa, otherMfa].map((client) => client.call("regenerateRecoveryCodes", { proof }, headers)));

    expect(answers.filter((answer) => !answer.error)).to.have.length(1);
    for (const answer of answers) if (answer.response) handedOut.push(...answer.response.recoveryCodes);
  });

  it("counts at most the budget of 50 parallel wrong codes, then refuses even the right code until the window passes", async () => {
    const { userId, headers, secret } = await enrolledAccount();
    const wrong = wrongCodeOf(secret);

    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        (i % 2 ? mfa : otherMfa).call("regenerateRecoveryCodes", { proof: { factor: { case: "totpCode", value: wrong } } }, headers),
      ),
    );

    const counted = (await platform.db.query("select count(*)::int as n from mfa_failure where user_id = $1", [userId])).rows[0].n;
    expect(counted).to.equal(failureBudget);
    const codes = answers.map((answer) => answer.error?.code);
    expect(codes.filter((code) => code === grpc.status.INVALID_ARGUMENT)).to.have.length(failureBudget);
    expect(codes.filter((code) => code === grpc.status.RESOURCE_EXHAUSTED)).to.have.length(50 - failureBudget);

    const right = codeOf(secret, 1);
    handedOut.push(right);
    const refused = await mfa.call("regenerateRecoveryCodes", { proof: { factor: { case: "totpCode", value: right } } }, headers);
    expect(refused.error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
    expect(Number(refused.error!.metadata.get("retry-after")[0]), "seconds until the oldest failure leaves the window").to.be.within(1, 15 * 60);

    // As if the window, and the lockout the spent budget started, had passed.
    await platform.db.query("update mfa_failure set fail_time = now() - interval '16 minutes' where user_id = $1", [userId]);
    await platform.db.query("update mfa_lockout set lock_time = lock_time - interval '16 minutes', until_time = until_time - interval '16 minutes' where user_id = $1", [userId]);
    const later = await mfa.call("regenerateRecoveryCodes", { proof: { factor: { case: "totpCode", value: right } } }, headers);
    expect(later.error).to.equal(undefined);
    handedOut.push(...later.response!.recoveryCodes);
  });

  const recovery = (value: string) => ({ proof: { factor: { case: "recoveryCode" as const, value } } });
  const totpProof = (value: string) => ({ proof: { factor: { case: "totpCode" as const, value } } });

  it("uses a recovery code once, whatever its case and dashes", async () => {
    const { userId, headers, recoveryCodes } = await enrolledAccount();

    const first = await mfa.call("stepUp", recovery(recoveryCodes[3]!.toUpperCase().replace("-", " ")), headers);
    const again = await otherMfa.call("stepUp", recovery(recoveryCodes[3]!), headers);

    expect(first.error).to.equal(undefined);
    expect(again.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(again.error!)).to.deep.equal(["proof.recovery_code"]);
    expect((await platform.db.query("select count(*)::int as n from recovery_code where user_id = $1 and use_time is null", [userId])).rows[0].n).to.equal(9);
    const events = await auditEvents(userId);
    expect(events.filter((e) => e.event === "mfa.recovery_code_used")).to.deep.equal([{ event: "mfa.recovery_code_used", outcome: "success", detail: { remaining: 9 } }]);
    expect(events.at(-1)).to.deep.include({ event: "mfa.factor_failed", outcome: "failure" });
    expect(events.at(-1)!.detail).to.deep.include({ factor: "recovery_code", reason: "wrong_or_used_code" });
  });

  it("regenerates recovery codes: the old ones stop working, the new ones work", async () => {
    const { userId, headers, secret, recoveryCodes } = await enrolledAccount();
    const code = codeOf(secret, 1);
    handedOut.push(code);

    const regenerated = await connectCall(platform.running.httpPort!, "/portcullis.v1.MfaService/RegenerateRecoveryCodes", { proof: { totpCode: code } }, headers);

    expect(regenerated.status, regenerated.text).to.equal(200);
    const fresh: string[] = regenerated.json.recoveryCodes;
    handedOut.push(...fresh);
    expect(fresh).to.have.length(10);
    expect(fresh.filter((c) => recoveryCodes.includes(c))).to.deep.equal([]);
    expect((await mfa.call("stepUp", recovery(recoveryCodes[0]!), headers)).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect((await mfa.call("stepUp", recovery(fresh[0]!), headers)).error).to.equal(undefined);
    expect((await auditEvents(userId)).map((e) => e.event)).to.include("mfa.recovery_codes_regenerated");
  });

  it("disables TOTP only with a current code, removing the factor and the recovery codes", async () => {
    const { userId, headers, secret, recoveryCodes } = await enrolledAccount();

    const wrong = await mfa.call("disableTotp", totpProof(wrongCodeOf(secret)), headers);
    expect(wrong.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(fieldsOf(wrong.error!)).to.deep.equal(["proof.totp_code"]);
    expect((await platform.db.query("select count(*)::int as n from totp_factor where user_id = $1", [userId])).rows[0].n).to.equal(1);

    const disabled = await mfa.call("disableTotp", recovery(recoveryCodes[5]!), headers);

    expect(disabled.error).to.equal(undefined);
    expect((await platform.db.query("select count(*)::int as n from totp_factor where user_id = $1", [userId])).rows[0].n).to.equal(0);
    expect((await platform.db.query("select count(*)::int as n from recovery_code where user_id = $1", [userId])).rows[0].n).to.equal(0);
    const off = await mfa.call("regenerateRecoveryCodes", recovery(recoveryCodes[6]!), headers);
    expect(off.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
    expect(reasonOf(off.error!)).to.equal("MFA_NOT_ENABLED");
    expect((await auditEvents(userId)).filter((e) => e.event === "mfa.totp_disabled")).to.deep.equal([
      { event: "mfa.totp_disabled", outcome: "success", detail: { proof: "recovery_code" } },
    ]);
    expect((await mfa.call("enrollTotp", {}, headers)).error, "and can be enrolled again").to.equal(undefined);
  });
});
