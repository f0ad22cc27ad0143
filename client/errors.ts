import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema, type ErrorInfo } from "../gen/google/rpc/error_details_pb.js";

/**
 * Every call made through the client rejects with a PortcullisError, or the
 * subclass for the ErrorInfo reason the app can act on. They are ConnectErrors
 * (code, rawMessage, findDetails and the response headers in `metadata` work as
 * usual); `metadata` also holds the ErrorInfo's metadata as plain properties,
 * e.g. `error.metadata.required_level`.
 */
export class PortcullisError extends ConnectError {
  /** The ErrorInfo reason (TOKEN_EXPIRED, RATE_LIMITED, …), when the server gave one. */
  readonly reason?: string;
  declare readonly metadata: Headers & Readonly<Record<string, string>>;

  constructor(error: ConnectError, reason?: string) {
    super(error.rawMessage, error.code, error.metadata, undefined, error.cause);
    // ConnectError's own `instanceof` recognises a subclass by this name (and the fields), so it must stay.
    this.name = "ConnectError";
    this.details = error.details;
    const info = errorInfoOf(error);
    this.reason = reason ?? (info?.reason || undefined);
    // A key that is also a Headers method would hide it; our server sends none.
    for (const [key, value] of Object.entries(info?.metadata ?? {})) if (!(key in this.metadata)) Object.defineProperty(this.metadata, key, { value, enumerable: true });
  }

  /** The typed error for whatever a call threw: a ConnectError from the wire, or a network failure. */
  static from(e: unknown): PortcullisError {
    if (e instanceof PortcullisError) return e;
    const error = connectErrorOf(e);
    switch (errorInfoOf(error)?.reason) {
      case "RATE_LIMITED":
        return new RateLimitedError(error);
      case "KYC_LEVEL_REQUIRED":
        return new KycLevelRequiredError(error);
      case "PERMISSION_REQUIRED":
        return new PermissionRequiredError(error);
      case "STEP_UP_REQUIRED":
        return new StepUpRequiredError(error);
      case "CAPTCHA_REQUIRED":
        return new CaptchaRequiredError(error);
    }
    return error.code === Code.InvalidArgument ? new InvalidArgumentError(error) : new PortcullisError(error);
  }

  // ConnectError's check answers true for any ConnectError-shaped value; subclasses need the prototype chain.
  static [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

/** RESOURCE_EXHAUSTED: call again after `retryAfterMs`. */
export class RateLimitedError extends PortcullisError {
  readonly retryAfterMs: number;
  /** The configured rule that was hit, e.g. "login_email". */
  readonly rule?: string;

  constructor(error: ConnectError) {
    super(error);
    const delay = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
    const header = Number(error.metadata.get("retry-after"));
    this.retryAfterMs = delay ? durationMs(delay) : Number.isFinite(header) ? header * 1000 : 0;
    this.rule = this.metadata.rule;
  }
}

/** PERMISSION_DENIED: the account must be verified to `requiredLevel` first (KycService). */
export class KycLevelRequiredError extends PortcullisError {
  readonly requiredLevel: number;
  readonly currentLevel: number;

  constructor(error: ConnectError) {
    super(error);
    this.requiredLevel = Number(this.metadata.required_level);
    this.currentLevel = Number(this.metadata.current_level);
  }
}

/** PERMISSION_DENIED: the account lacks a permission an operator grants. */
export class PermissionRequiredError extends PortcullisError {
  /** The missing permissions, comma-separated as the server sends them. */
  readonly permission?: string;

  constructor(error: ConnectError) {
    super(error);
    this.permission = this.metadata.permissions;
  }
}

/** PERMISSION_DENIED: prove a second factor with MfaService.StepUp, then call again. */
export class StepUpRequiredError extends PortcullisError {
  readonly requiredAal: number;
  /** The factor must be at most this old; 0 means any time in this session. */
  readonly maxFactorAgeSeconds: number;

  constructor(error: ConnectError) {
    super(error);
    this.requiredAal = Number(this.metadata.required_aal);
    this.maxFactorAgeSeconds = Number(this.metadata.max_factor_age_seconds ?? 0);
  }
}

/** FAILED_PRECONDITION: render the provider's widget with `siteKey` and send its token in the x-captcha-token header. */
export class CaptchaRequiredError extends PortcullisError {
  readonly provider: string;
  readonly siteKey: string;

  constructor(error: ConnectError) {
    super(error);
    this.provider = this.metadata.provider ?? "";
    this.siteKey = this.metadata.site_key ?? "";
  }
}

/** INVALID_ARGUMENT: each violation names the request field at fault, e.g. "phone_number". */
export class InvalidArgumentError extends PortcullisError {
  readonly violations: { field: string; description: string }[];

  constructor(error: ConnectError) {
    super(error);
    this.violations = (error.findDetails(BadRequestSchema)[0]?.fieldViolations ?? []).map(({ field, description }) => ({ field, description }));
  }
}

/**
 * The call failed because the session is over: revoked, signed out, expired,
 * its refresh token refused, or there was none. `reason` says which; sign in again.
 */
export class SessionEndedError extends PortcullisError {
  static because(reason: string, error?: ConnectError): SessionEndedError {
    return new SessionEndedError(error ?? new ConnectError(`the session has ended (${reason}); sign in again`, Code.Unauthenticated), reason);
  }
}

function errorInfoOf(error: ConnectError): ErrorInfo | undefined {
  return error.findDetails(ErrorInfoSchema)[0];
}

/** fetch rejects with a TypeError when no answer came (offline, DNS, CORS): UNAVAILABLE, as gRPC names it, so apps retry it like one. */
function connectErrorOf(e: unknown): ConnectError {
  const error = ConnectError.from(e);
  const cause = error.cause ?? e;
  if (error.code !== Code.Unknown || !(cause instanceof TypeError)) return error;
  return new ConnectError(`the server could not be reached: ${error.rawMessage}`, Code.Unavailable, error.metadata, undefined, cause);
}
