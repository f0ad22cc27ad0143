import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { detail, errorDomain, failedPrecondition } from "../kernel/errors.js";

/** The chain's refusals (PERMISSION_DENIED, and FAILED_PRECONDITION for a captcha), with the ErrorInfo reason a client acts on. */

export function kycLevelRequired(required: number, current: number): ConnectError {
  return permissionDenied("KYC_LEVEL_REQUIRED", `this call needs KYC level ${required}; the token carries level ${current}`, {
    required_level: String(required),
    current_level: String(current),
  });
}

/** The client proves a second factor with MfaService.StepUp, then retries with the new access token. */
export function stepUpRequired(requiredAal: number, maxFactorAgeSeconds: number): ConnectError {
  const recent = maxFactorAgeSeconds > 0 ? ` within the last ${maxFactorAgeSeconds} seconds` : "";
  return permissionDenied("STEP_UP_REQUIRED", `this call needs a second factor${recent}: call MfaService.StepUp, then retry with its access token`, {
    required_aal: String(requiredAal),
    max_factor_age_seconds: String(maxFactorAgeSeconds),
  });
}

export function permissionDenied(reason: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return new ConnectError(message, Code.PermissionDenied, undefined, [detail(ErrorInfoSchema, { reason, domain: errorDomain, metadata })]);
}

/** FAILED_PRECONDITION rather than PERMISSION_DENIED: the caller may call once a captcha is solved, and the details say which widget to render. */
export function captchaRequired(provider: string, siteKey: string, cause: "missing" | "rejected"): ConnectError {
  const message = cause === "missing" ? "this call needs a captcha token in the x-captcha-token header" : "the captcha token was not accepted; solve the captcha again";
  return failedPrecondition("CAPTCHA_REQUIRED", message, { provider, site_key: siteKey });
}
