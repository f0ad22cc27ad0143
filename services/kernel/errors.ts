import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "../../gen/google/rpc/error_details_pb.js";

/**
 * Errors are ConnectErrors with google.rpc details: connect-node sends them as
 * they are, and the gRPC adapter turns them into grpc-status-details-bin.
 */

/** The ErrorInfo domain of every reason Portcullis gives. */
export const errorDomain = "portcullis.dev";

export function detail<D extends DescMessage>(desc: D, value: MessageInitShape<D>) {
  return { desc, value: create(desc, value) };
}

export interface FieldViolation {
  field: string;
  description: string;
}

export function invalidArgument(violations: FieldViolation[]): ConnectError {
  const message = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(message, Code.InvalidArgument, undefined, [
    detail(BadRequestSchema, { fieldViolations: violations }),
  ]);
}

export type UnauthenticatedReason =
  | "TOKEN_MISSING"
  | "TOKEN_EXPIRED"
  | "TOKEN_INVALID"
  | "SESSION_REVOKED"
  | "INVALID_CREDENTIALS"
  /** A service account's proof (client assertion or secret) failed, whatever the cause: RFC 6749's invalid_client. */
  | "INVALID_CLIENT"
  /** VerifyMfa with a challenge that is unknown, expired, used, out of attempts or from elsewhere: sign in again. */
  | "MFA_CHALLENGE_INVALID";

export function unauthenticated(reason: UnauthenticatedReason, message: string): ConnectError {
  return new ConnectError(message, Code.Unauthenticated, undefined, [
    detail(ErrorInfoSchema, { reason, domain: errorDomain }),
  ]);
}

export type FailedPreconditionReason =
  | "EMAIL_NOT_VERIFIED"
  | "FRESH_SIGN_IN_REQUIRED"
  /** EnrollTotp on an account whose TOTP is on: DisableTotp first. */
  | "TOTP_ALREADY_ENABLED"
  /** ConfirmTotp with no enrolment waiting: EnrollTotp first. */
  | "TOTP_NOT_ENROLLED"
  /** A second factor asked of an account that has none. */
  | "MFA_NOT_ENABLED"
  /** Passkeys are off: the relying party taken from APP_URL is one browsers refuse (the start-up log says why). */
  | "PASSKEYS_UNAVAILABLE"
  /** The method wants a passing captcha token in x-captcha-token; metadata provider and site_key let the client render one. */
  | "CAPTCHA_REQUIRED";

/** The call was right but the account is not in a state to allow it; `reason` tells the client what to do first. */
export function failedPrecondition(reason: FailedPreconditionReason, message: string, metadata?: Record<string, string>): ConnectError {
  return new ConnectError(message, Code.FailedPrecondition, undefined, [
    detail(ErrorInfoSchema, { reason, domain: errorDomain, metadata }),
  ]);
}

export function rateLimited(rule: string, retryAfterMs: number): ConnectError {
  return new ConnectError(
    "too many requests; retry later",
    Code.ResourceExhausted,
    { "retry-after": String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
    [
      // Whole milliseconds: a Duration's nanos cannot hold a fraction of one.
      detail(RetryInfoSchema, { retryDelay: durationFromMs(Math.max(1, Math.ceil(retryAfterMs))) }),
      detail(ErrorInfoSchema, { reason: "RATE_LIMITED", domain: errorDomain, metadata: { rule } }),
    ],
  );
}

export function unavailable(message: string): ConnectError {
  return new ConnectError(message, Code.Unavailable);
}

export { Code, ConnectError };
