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
