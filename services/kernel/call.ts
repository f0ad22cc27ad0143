import type { DescMethod, MessageInitShape, MessageShape, DescMessage } from "@bufbuild/protobuf";

/** What a verified access token says about its bearer. */
export interface Principal {
  kind: "user" | "service";
  /** User id, or the service's name for service tokens. */
  subject: string;
  sessionId: string;
  deviceId: string;
  kycLevel: number;
  kycStatus: string;
  permissions: readonly string[];
  amr: readonly string[];
  /** The service acting for the user (claim `act.sub`), in a token exchanged for this audience. */
  actor?: string;
  /** Authentication assurance level (claim `aal`): 2 once a second factor was used in this session; 1 when absent. */
  aal?: number;
  /** Seconds since the epoch when a second factor was last used in this session (claim `mfa_time`); 0 or absent for never. */
  mfaTime?: number;
  /** Whether the account has a second factor (claim `mfa`): only such accounts are asked to step up. */
  mfaEnrolled?: boolean;
  /** Seconds since the epoch when the session ends for good; 0 for service tokens. */
  sessionExpiresAt: number;
  tokenId: string;
  issuedAt: number;
  /** Seconds since the epoch. */
  expiresAt: number;
}

/** Who did it, from where: taken from the call, never a code, password or token. */
export interface CallOrigin {
  clientIp: string;
  userAgent: string;
  requestId: string;
}

/** A call refused by a rate limit: the chain reports it, the audit log keeps it. */
export interface LimitHit extends CallOrigin {
  rule: string;
  /** The limit's key: an IP, a user id, or a hash standing for a phone number or email. */
  key: string;
  userId?: string;
}

/** A call refused for want of a passing captcha token: the chain reports it, the audit log keeps it. Never holds the token. */
export interface CaptchaRefusal extends CallOrigin {
  /** "/portcullis.v1.AuthService/SendOtp". */
  method: string;
  provider: string;
  /** missing: no token; rejected: the provider (or its score) refused it; unavailable: the provider could not be asked. */
  cause: "missing" | "rejected" | "unavailable";
}

/** What a handler knows about the call it serves, filled in by the chain. */
export interface CallContext extends CallOrigin {
  readonly path: string;
  /** At most 512 characters: what sessions and the audit log keep of it. */
  readonly userAgent: string;
  /** Set for user and service methods once the token has been verified. */
  readonly principal?: Principal;
}

export type UnaryHandler<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> = (
  request: MessageShape<I>,
  call: CallContext,
) => Promise<MessageInitShape<O>>;

/** A service implementation written against the generated types, transport-free. */
export type ServiceHandlers<S extends { method: Record<string, DescMethod> }> = {
  [K in keyof S["method"]]: UnaryHandler<S["method"][K]["input"], S["method"][K]["output"]>;
};
