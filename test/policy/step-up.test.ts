import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { create, setExtension, type DescMethod, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { MethodOptionsSchema } from "@bufbuild/protobuf/wkt";
import type { UnaryHandler } from "../../services/guard/guard.js";
import { defaultRateLimits } from "../../services/platform/config.js";
import { PolicyError, readPolicies } from "../../services/policy/access.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { AdminService } from "../../gen/portcullis/v1/admin_service_pb.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService, SourceOfFunds } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";
import { PasskeyService } from "../../gen/portcullis/v1/passkey_service_pb.js";
import { access, AccessPolicySchema, Caller } from "../../gen/portcullis/v1/policy_pb.js";
import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";
import { connectCall, detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { serveBehindGuard, type GuardedService } from "../support/guarded-service.js";
import { MailInbox } from "../support/mail-inbox.js";
import { claimsOf, createServiceAccount, serviceToken } from "../support/service-accounts.js";
import { bearer, newPhone, registerVerified } from "../support/sign-in.js";
import { platformForSuite } from "../support/suite-platform.js";
import { codeOf, enrolTotp } from "../support/totp.js";

const password = "correct horse battery staple";
const stepUpRequired = { required_aal: "2", max_factor_age_seconds: "300" };
let counter = 0;

/**
 * Step-up as the contract declares it: ChangePassword (min_aal 2, a factor
 * at most 300 s old) and every AdminService call ask an account with a second
 * factor to prove it again; StepUp raises the session and gives a token that
 * passes; accounts without one go on as before.
 */
describe("Step-up declared in the contract", () => {
  const mail = new MailInbox();
  // The no-leak check runs in the platform's after hook rather than in a test of its own: mocha runs this
  // suite's tests before the nested suite's, whose codes, secrets and tokens must stay out of logs and audit rows too.
  const secrets: string[] = [password];
  const platform = platformForSuite({
    inboxes: [mail],
    secrets,
    env: {
      RATE_LIMITS: [
        "login_ip=1000/900", "login_email=1000/900", "register_ip=1000/3600", "register_email=1000/3600", "verify_email_ip=1000/3600",
        "refresh_user=1000/60", "refresh_ip=1000/60", "change_password_user=1000/60", "mfa_user=1000/60",
      ].join(","),
    },
  });
  const auth = platform.client(AuthService);
  const mfa = platform.client(MfaService);

  /**
   * An account with TOTP on, as its owner makes it: register, enrol with a
   * code the app computes from the returned secret, then refresh, which
   * gives an access token saying the account has a second factor, at aal 1.
   */
  async function enrolledUser() {
    const email = `step.${counter++}@example.com`;
    const signedIn = (await registerVerified(platform.running.grpcPort!, mail, email, password))!;
    const { secret, recoveryCodes } = await enrolTotp(mfa, signedIn.tokens!.accessToken, password);
    const refreshed = await auth.call("refreshToken", { refreshToken: signedIn.tokens!.refreshToken });
    if (refreshed.error) throw refreshed.error;
    const tokens = refreshed.response.tokens!;
    secrets.push(secret, ...recoveryCodes, tokens.accessToken, tokens.refreshToken);
    return {
      email,
      userId: signedIn.user!.userId,
      accessToken: tokens.accessToken,
      refreshToken: tokens.refreshToken,
      recoveryCodes,
      // The code after the one ConfirmTotp used: a step is accepted once.
      nextCode: () => codeOf(secret, 1),
    };
  }

  const changePassword = (token: string, newPassword: string) =>
    auth.call("changePassword", { currentPassword: password, newPassword }, bearer(token));

  it("asks an enrolled user's aal-1 token to step up for ChangePassword, then serves the token StepUp gives — over gRPC", async () => {
    const user = await enrolledUser();
    expect(claimsOf(user.accessToken)).to.deep.include({ aal: 1, mfa: true });

    const refused = await changePassword(user.accessToken, "a whole new passphrase");
    expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)).to.deep.include({ reason: "STEP_UP_REQUIRED", metadata: stepUpRequired });

    const code = user.nextCode();
    secrets.push(code);
    const stepped = await mfa.call("stepUp", { proof: { factor: { case: "totpCode", value: code } } }, bearer(user.accessToken));
    expect(stepped.error).to.equal(undefined);
    const claims = claimsOf(stepped.response!.accessToken);
    expect(claims).to.deep.include({ aal: 2, mfa: true, sub: user.userId, sid: claimsOf(user.accessToken).sid });
    expect(claims.amr).to.include.members(["pwd", "otp", "mfa"]);
    expect(Math.abs(claims.mfa_time - Date.now() / 1000)).to.be.below(30);
    expect(stepped.response!.accessTokenExpireTime).to.not.equal(undefined);
    secrets.push(stepped.response!.accessToken);

    const changed = await changePassword(stepped.response!.accessToken, "a whole new passphrase");
    expect(changed.error).to.equal(undefined);
    const { rows } = await platform.db.query("select outcome, detail from audit_event where event = 'mfa.step_up' and user_id = $1", [user.userId]);
    expect(rows).to.deep.equal([{ outcome: "success", detail: { factor: "totp" } }]);
  });

  it("does the same through the gateway, with a recovery code, and keeps aal 2 in the session for the next refresh", async () => {
    const user = await enrolledUser();
    const port = platform.running.httpPort!;
    const refused = await connectCall(port, "/portcullis.v1.AuthService/ChangePassword", { currentPassword: password, newPassword: "the gateway passphrase" }, bearer(user.accessToken));
    expect(refused.status).to.equal(403);
    expect(refused.json.code).to.equal("permission_denied");
    expect(refused.json.details[0].debug).to.deep.include({ reason: "STEP_UP_REQUIRED", metadata: stepUpRequired });

    const stepped = await connectCall(port, "/portcullis.v1.MfaService/StepUp", { proof: { recoveryCode: user.recoveryCodes[0] } }, bearer(user.accessToken));
    expect(stepped.status).to.equal(200);
    expect(claimsOf(stepped.json.accessToken)).to.deep.include({ aal: 2 });
    expect(claimsOf(stepped.json.accessToken).amr).to.include.members(["pwd", "rc", "mfa"]);
    secrets.push(stepped.json.accessToken);
    const again = await connectCall(port, "/portcullis.v1.MfaService/StepUp", { proof: { recoveryCode: user.recoveryCodes[0] } }, bearer(user.accessToken));
    expect(again.status, "a recovery code works once").to.equal(400);

    const { rows } = await platform.db.query("select aal, mfa_time is not null as stepped from session where user_id = $1 and revoke_time is null", [user.userId]);
    expect(rows).to.deep.equal([{ aal: 2, stepped: true }]);
    const refreshed = await connectCall(port, "/portcullis.v1.AuthService/RefreshToken", { refreshToken: user.refreshToken });
    const next = refreshed.json.tokens.accessToken;
    secrets.push(next, refreshed.json.tokens.refreshToken);
    expect(claimsOf(next), "the refreshed token keeps the step-up").to.deep.include({ aal: 2, mfa_time: claimsOf(stepped.json.accessToken).mfa_time });

    const changed = await connectCall(port, "/portcullis.v1.AuthService/ChangePassword", { currentPassword: password, newPassword: "the gateway passphrase" }, bearer(next));
    expect(changed.status).to.equal(200);
  });

  it("refuses a wrong code without raising the session", async () => {
    const user = await enrolledUser();
    const wrong = await mfa.call("stepUp", { proof: { factor: { case: "totpCode", value: "000000" } } }, bearer(user.accessToken));
    expect(wrong.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    const { rows } = await platform.db.query("select aal from session where user_id = $1 and revoke_time is null", [user.userId]);
    expect(rows).to.deep.equal([{ aal: 1 }]);
    expect((await changePassword(user.accessToken, "not this time either")).error?.code).to.equal(grpc.status.PERMISSION_DENIED);
  });

  it("asks again once the second factor is older than max_factor_age_seconds", async () => {
    const user = await enrolledUser();
    const code = user.nextCode();
    secrets.push(code);
    const stepped = await mfa.call("stepUp", { proof: { factor: { case: "totpCode", value: code } } }, bearer(user.accessToken));
    const claims = claimsOf(stepped.response!.accessToken);
    // The same session's token, as it would be 301 seconds after the step-up.
    const stale = await platform.running.app!.tokens.issue({
      kind: "user",
      subject: claims.sub,
      sessionId: claims.sid,
      sessionExpiresAt: claims.sid_exp,
      deviceId: claims.did,
      kycLevel: 0,
      kycStatus: "",
      permissions: [],
      amr: claims.amr,
      aal: 2,
      mfaTime: claims.mfa_time - 301,
      mfaEnrolled: true,
    });
    const refused = await changePassword(stale.token, "too late for this");
    expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)).to.deep.include({ reason: "STEP_UP_REQUIRED", metadata: stepUpRequired });
    expect((await changePassword(stepped.response!.accessToken, "just in time")).error).to.equal(undefined);
  });

  it("asks an enrolled user to step up for ChangePhoneNumber too, before any code is sent", async () => {
    const user = await enrolledUser();
    const change = (token: string) => auth.call("changePhoneNumber", { phoneNumber: newPhone(), currentPassword: password }, bearer(token));
    const refused = await change(user.accessToken);
    expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)).to.deep.include({ reason: "STEP_UP_REQUIRED", metadata: stepUpRequired });
    const { rows } = await platform.db.query("select count(*)::int as started from contact_verification where user_id = $1 and channel = 'phone'", [user.userId]);
    expect(rows).to.deep.equal([{ started: 0 }]);

    const code = user.nextCode();
    secrets.push(code);
    const stepped = await mfa.call("stepUp", { proof: { factor: { case: "totpCode", value: code } } }, bearer(user.accessToken));
    secrets.push(stepped.response!.accessToken);
    expect((await change(stepped.response!.accessToken)).error).to.equal(undefined);
  });

  it("lets a user without a second factor change the password at aal 1, as before", async () => {
    const signedIn = (await registerVerified(platform.running.grpcPort!, mail, `plain.${counter++}@example.com`, password))!;
    expect(claimsOf(signedIn.tokens!.accessToken)).to.deep.include({ aal: 1 });
    expect(claimsOf(signedIn.tokens!.accessToken).mfa).to.equal(undefined);
    expect((await changePassword(signedIn.tokens!.accessToken, "still a fine passphrase")).error).to.equal(undefined);
  });

  it("asks an enrolled operator to step up for AdminService calls, through both doors, and not an operator without a factor", async () => {
    const admin = grpcClient(AdminService, platform.running.grpcPort!);
    const operator = (aal: number, mfaEnrolled: boolean, mfaTime = 0) =>
      platform.running.app!.tokens.issue({
        kind: "user",
        subject: crypto.randomUUID(),
        sessionId: crypto.randomUUID(),
        sessionExpiresAt: 0,
        deviceId: "operator-laptop",
        kycLevel: 0,
        kycStatus: "",
        permissions: ["user.admin"],
        amr: ["pwd"],
        aal,
        mfaTime,
        mfaEnrolled,
      });
    const atAal1 = (await operator(1, true)).token;
    const refused = await admin.call("listUsers", {}, bearer(atAal1));
    expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)).to.deep.include({
      reason: "STEP_UP_REQUIRED",
      metadata: { required_aal: "2", max_factor_age_seconds: "900" },
    });
    const http = await connectCall(platform.running.httpPort!, "/portcullis.v1.AdminService/ListUsers", {}, bearer(atAal1));
    expect(http.json.details[0].debug.reason).to.equal("STEP_UP_REQUIRED");

    const stepped = (await operator(2, true, Math.floor(Date.now() / 1000) - 60)).token;
    expect((await admin.call("listUsers", {}, bearer(stepped))).error).to.equal(undefined);
    expect((await admin.call("listUsers", {}, bearer((await operator(1, false)).token))).error, "no factor to step up with").to.equal(undefined);
    admin.close();
  });

  /**
   * A downstream service behind the guard serves KycService.SubmitEnhancedKyc,
   * whose contract asks min_aal 2 within 900 s; users reach it with tokens a
   * checkout service exchanges for it.
   */
  describe("for a guarded downstream service", () => {
    let downstream: GuardedService;
    let checkout: string;
    let handled = 0;
    const enhanced = { dueDiligence: { proofOfAddressRef: "uploads/proof.pdf", sourceOfFunds: SourceOfFunds.EMPLOYMENT } };

    before(async function () {
      // The admin tool starts as its own process, a few seconds each time.
      this.timeout(90_000);
      const checkoutSecret = await createServiceAccount(platform.stores, "checkout", ["portcullis", "kyc-desk"]);
      checkout = await serviceToken(platform.running.grpcPort!, "checkout", checkoutSecret, "portcullis");
      const submitEnhanced: UnaryHandler = async () => {
        handled++;
        return {};
      };
      downstream = await serveBehindGuard(platform.running, platform.stores, new Map([[KycService.method.submitEnhancedKyc, submitEnhanced]]), { name: "kyc-desk" });
    });
    after(async () => {
      await downstream.close();
    });

    it("refuses an exchanged aal-1 token of an enrolled user with STEP_UP_REQUIRED, and serves one exchanged after StepUp", async () => {
      const user = await enrolledUser();
      // Level 2 for the method's min_kyc_level: StepUp reads it into its token from the account.
      await platform.db.query("update app_user set kyc_level = 2 where id = $1", [user.userId]);
      const tokens = grpcClient(TokenService, platform.running.grpcPort!);
      const client = grpcClient(KycService, downstream.port);
      const exchange = async (subjectToken: string) => {
        const exchanged = await tokens.call("exchangeToken", { subjectToken, audience: "kyc-desk" }, bearer(checkout));
        if (exchanged.error) throw exchanged.error;
        return exchanged.response.accessToken;
      };

      const code = user.nextCode();
      secrets.push(code);
      const stepped = await mfa.call("stepUp", { proof: { factor: { case: "totpCode", value: code } } }, bearer(user.accessToken));
      expect(stepped.error).to.equal(undefined);
      expect(claimsOf(stepped.response!.accessToken)).to.deep.include({ kyc_lvl: 2, aal: 2 });

      // The same user and level, before the step-up: aal 1.
      const before = await platform.running.app!.tokens.issue({
        ...principalClaims(claimsOf(stepped.response!.accessToken)),
        aal: 1,
        mfaTime: 0,
        mfaEnrolled: true,
      });
      const refused = await client.call("submitEnhancedKyc", enhanced, bearer(await exchange(before.token)));
      expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)).to.deep.include({
        reason: "STEP_UP_REQUIRED",
        metadata: { required_aal: "2", max_factor_age_seconds: "900" },
      });
      expect(handled).to.equal(0);

      const exchangedAfter = await exchange(stepped.response!.accessToken);
      expect(claimsOf(exchangedAfter)).to.deep.include({ aal: 2, mfa: true, aud: "kyc-desk" });
      expect((await client.call("submitEnhancedKyc", enhanced, bearer(exchangedAfter))).error).to.equal(undefined);
      expect(handled).to.equal(1);
      tokens.close();
      client.close();
    });
  });
});

/** A token's user claims back as what AccessTokens.issue takes. */
function principalClaims(claims: Record<string, any>) {
  return {
    kind: "user" as const,
    subject: claims.sub,
    sessionId: claims.sid,
    sessionExpiresAt: claims.sid_exp,
    deviceId: claims.did,
    kycLevel: claims.kyc_lvl,
    kycStatus: claims.kyc_st,
    permissions: claims.perm,
    amr: claims.amr,
  };
}

describe("Step-up rules at start-up", () => {
  /** ChangePassword with `policy` instead of its own, as another service's proto might declare it. */
  function withPolicy(policy: MessageInitShape<typeof AccessPolicySchema>): DescService {
    const method = AuthService.method.changePassword;
    const options = create(MethodOptionsSchema);
    setExtension(options, access, create(AccessPolicySchema, policy));
    const patched = { ...method, proto: { ...method.proto, options } } as DescMethod;
    return { ...AuthService, methods: [patched] } as DescService;
  }

  it("reads min_aal and max_factor_age_seconds from the contract", () => {
    const policies = readPolicies([AuthService, PasskeyService], defaultRateLimits);
    const { changePassword, changeEmail, changePhoneNumber } = AuthService.method;
    const { startPasskeyRegistration, deletePasskey } = PasskeyService.method;
    for (const method of [changePassword, changeEmail, changePhoneNumber, startPasskeyRegistration, deletePasskey]) {
      expect(policies.get(method), method.name).to.deep.include({ minAal: 2, maxFactorAgeSeconds: 300 });
    }
  });

  it("refuses max_factor_age_seconds without min_aal 2", () => {
    expect(() => readPolicies([withPolicy({ caller: Caller.USER, maxFactorAgeSeconds: 300 })], defaultRateLimits)).to.throw(
      PolicyError,
      /ChangePassword: access.max_factor_age_seconds needs min_aal: 2/,
    );
  });

  it("refuses a level above 2, and min_aal on a public method", () => {
    expect(() => readPolicies([withPolicy({ caller: Caller.USER, minAal: 3 })], defaultRateLimits)).to.throw(PolicyError, /min_aal is 3/);
    expect(() => readPolicies([withPolicy({ caller: Caller.PUBLIC, minAal: 2 })], defaultRateLimits)).to.throw(PolicyError, /min_aal applies to user tokens only/);
    expect(() => readPolicies([withPolicy({ caller: Caller.USER, minAal: 2, maxFactorAgeSeconds: 300 })], defaultRateLimits)).not.to.throw();
  });

  it("refuses min_aal and max_factor_age_seconds on a service method, where no second factor is ever shown", () => {
    expect(() => readPolicies([withPolicy({ caller: Caller.SERVICE, minAal: 2 })], defaultRateLimits)).to.throw(
      PolicyError,
      /ChangePassword: access.min_aal applies to user tokens only \(CALLER_USER\)/,
    );
    expect(() => readPolicies([withPolicy({ caller: Caller.SERVICE, minAal: 2, maxFactorAgeSeconds: 300 })], defaultRateLimits)).to.throw(PolicyError, /user tokens only/);
    expect(() => readPolicies([withPolicy({ caller: Caller.SERVICE, maxFactorAgeSeconds: 300 })], defaultRateLimits)).to.throw(PolicyError, /needs min_aal: 2/);
  });
});
