import { expect } from "chai";
import * as OTPAuth from "otpauth";
import type { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";
import type { grpcClient } from "./clients.js";
import { bearer } from "./sign-in.js";

/** RATE_LIMITS that the second-factor suites' own calls never reach: every rule a sign-in with TOTP passes through. */
export const secondFactorRateLimits = [
  "register_ip=1000/60", "register_email=1000/60", "verify_email_ip=1000/60", "login_ip=1000/60", "login_email=1000/60",
  "otp_send_ip=1000/60", "otp_send_phone=1000/60", "otp_verify_ip=1000/60", "mfa_user=1000/60", "mfa_verify_ip=1000/60",
].join(",");

/** The code an authenticator app shows for `secret`, `stepsAhead` steps of 30 s from now. */
export function codeOf(secret: string, stepsAhead = 0): string {
  const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), algorithm: "SHA1", digits: 6, period: 30 });
  return totp.generate({ timestamp: Date.now() + stepsAhead * 30_000 });
}

/** A 6-digit code that is none of the secret's codes from the step before to the step after. */
export function wrongCodeOf(secret: string): string {
  const near = new Set([-1, 0, 1].map((step) => codeOf(secret, step)));
  for (let n = 0; ; n++) {
    const code = String(n).padStart(6, "0");
    if (!near.has(code)) return code;
  }
}

/**
 * Turns TOTP on for a signed-in user as their app would: EnrollTotp, then
 * ConfirmTotp with the code computed from the returned secret, which spends
 * this step's code. Its secret and recovery codes.
 */
export async function enrolTotp(mfa: ReturnType<typeof grpcClient<typeof MfaService>>, accessToken: string, password: string) {
  const enrolled = await mfa.call("enrollTotp", {}, bearer(accessToken));
  expect(enrolled.error).to.equal(undefined);
  const secret = enrolled.response!.secret;
  const confirmed = await mfa.call("confirmTotp", { code: codeOf(secret), currentPassword: password }, bearer(accessToken));
  expect(confirmed.error).to.equal(undefined);
  return { secret, recoveryCodes: confirmed.response!.recoveryCodes };
}
