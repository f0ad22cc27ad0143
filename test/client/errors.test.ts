import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { captchaRequired, stepUpRequired } from "../../services/policy/refusals.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import {
  CaptchaRequiredError,
  createPortcullisClient,
  InvalidArgumentError,
  KycLevelRequiredError,
  PermissionRequiredError,
  PortcullisError,
  RateLimitedError,
  StepUpRequiredError,
  type PortcullisClient,
} from "../../client/index.js";
import { newPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

const device = { deviceId: "browser", deviceType: DeviceType.WEB, deviceName: "Browser" };

async function rejectionOf(call: Promise<unknown>): Promise<PortcullisError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "the call fails").to.be.instanceOf(PortcullisError);
  return error as PortcullisError;
}

describe("portcullis/client errors, from the server's real answers", () => {
  const inbox = new SmsInbox();
  const platform = platformForSuite({ inboxes: [inbox], env: { RATE_LIMITS: "login_email=1/60,otp_send_ip=1000/3600,otp_verify_ip=1000/3600" } });
  let client: PortcullisClient;

  before(async () => {
    client = createPortcullisClient({ baseUrl: `http://127.0.0.1:${platform.running.httpPort}`, locks: null });
    const phone = newPhone();
    await client.auth.sendOtp({ phoneNumber: phone });
    await client.auth.verifyOtp({ phoneNumber: phone, code: inbox.codeFor(phone), device });
  });

  it("a rate limit: RateLimitedError with the rule and how long to wait", async () => {
    const login = () => client.auth.login({ email: "nobody@example.com", password: "not the password", device });
    const first = await rejectionOf(login());
    // A reason the client has no class for stays a PortcullisError with its reason.
    expect(first.constructor).to.equal(PortcullisError);
    expect(first).to.include({ code: Code.Unauthenticated, reason: "INVALID_CREDENTIALS" });

    const limited = await rejectionOf(login());
    expect(limited).to.be.instanceOf(RateLimitedError).and.to.include({ code: Code.ResourceExhausted, reason: "RATE_LIMITED", rule: "login_email" });
    const { retryAfterMs } = limited as RateLimitedError;
    expect(retryAfterMs).to.be.greaterThan(0).and.at.most(60_000);
    expect(limited.metadata.rule).to.equal("login_email");
  });

  it("a KYC-gated method: KycLevelRequiredError with both levels", async () => {
    const error = await rejectionOf(client.kyc.submitDocumentKyc({}));
    expect(error).to.be.instanceOf(KycLevelRequiredError).and.to.include({ code: Code.PermissionDenied, requiredLevel: 1, currentLevel: 0 });
    expect(error.metadata.required_level).to.equal("1");
    // Still a ConnectError: code, findDetails and the response headers work as with any Connect client.
    expect(error).to.be.instanceOf(ConnectError);
    expect(error.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("KYC_LEVEL_REQUIRED");
    expect(error.metadata.get("content-type")).to.equal("application/json");
  });

  it("a method behind a permission: PermissionRequiredError naming it", async () => {
    const error = await rejectionOf(client.kyc.reviewKycSubmission({}));
    expect(error).to.be.instanceOf(PermissionRequiredError).and.to.include({ permission: "kyc.review" });
    expect(error).not.to.be.instanceOf(KycLevelRequiredError);
  });

  it("a request that breaks the contract's field rules: InvalidArgumentError naming the field", async () => {
    const error = await rejectionOf(client.auth.sendOtp({ phoneNumber: "" }));
    expect(error).to.be.instanceOf(InvalidArgumentError).and.to.include({ code: Code.InvalidArgument });
    expect((error as InvalidArgumentError).violations).to.deep.equal([{ field: "phone_number", description: "value is required" }]);
  });

  it("step-up and captcha refusals, as the chain builds them: StepUpRequiredError and CaptchaRequiredError", () => {
    const stepUp = PortcullisError.from(stepUpRequired(2, 900));
    expect(stepUp).to.be.instanceOf(StepUpRequiredError).and.to.include({ requiredAal: 2, maxFactorAgeSeconds: 900, reason: "STEP_UP_REQUIRED" });
    const captcha = PortcullisError.from(captchaRequired("turnstile", "0x4AAA", "missing"));
    expect(captcha).to.be.instanceOf(CaptchaRequiredError).and.to.include({ code: Code.FailedPrecondition, provider: "turnstile", siteKey: "0x4AAA" });
  });

  it("a server that cannot be reached: UNAVAILABLE", async () => {
    const offline = createPortcullisClient({ baseUrl: "http://127.0.0.1:1", locks: null, fetch: () => Promise.reject(new TypeError("fetch failed")) });
    const error = await rejectionOf(offline.auth.getJwks({}));
    expect(error).to.include({ code: Code.Unavailable, reason: undefined });
  });
});
