import { audit, type AuditEntry } from "../audit/store.js";
import type { CallContext, Principal } from "../kernel/call.js";
import { Code, ConnectError, invalidArgument } from "../kernel/errors.js";
import type { Database } from "../platform/database.js";
import { permissionDenied } from "../policy/refusals.js";
import type { AccessTokens, InspectedToken } from "../tokens/access-token.js";
import { serviceAccountStore } from "./store.js";

export interface TokenExchangeSettings {
  /** Portcullis's own audience (JWT_AUDIENCE): subject tokens may carry it, targets never. */
  ownAudience: string;
  /** SERVICE_TOKEN_TTL_SECONDS: an exchanged token lives at most this long. */
  ttlSeconds: number;
}

/** Where a user's session stands now (the revocation feed): throws UNAUTHENTICATED for one signed out. */
export interface SessionCheck {
  check(principal: Principal): Principal;
}

/**
 * RFC 8693 for services acting for a user: the user's token, issued for
 * Portcullis or for the calling service (so A → B → C chains work), becomes
 * one bound to a service the caller may reach, for the same user, session and
 * (current) KYC level, with the caller in `act` (and any earlier actor nested
 * in it), never outliving the token it came from. Exchanged tokens carry the
 * session's `sid`, so signing the session out revokes them through the same
 * feed.
 */
export class TokenExchange {
  constructor(
    private readonly db: Database,
    private readonly tokens: AccessTokens,
    private readonly sessions: SessionCheck,
    private readonly settings: TokenExchangeSettings,
    private readonly now: () => number = Date.now,
  ) {}

  async exchange(subjectToken: string, audience: string, call: CallContext): Promise<{ token: string; expiresInSeconds: number }> {
    const client = call.principal!.subject;
    const refused = async (entry: Omit<AuditEntry, "event">, error: ConnectError): Promise<never> => {
      await audit(this.db, call, { event: "token.exchange", ...entry, detail: { client_id: client, audience, ...entry.detail } });
      throw error;
    };

    let subject: InspectedToken;
    try {
      subject = await this.tokens.inspect(subjectToken, [this.settings.ownAudience, client]);
    } catch (error) {
      if (!(error instanceof ConnectError && error.code === Code.Unauthenticated)) throw error;
      return refused({ outcome: "failure", detail: { reason: "subject_token_invalid" } }, badSubject("is not a valid, unexpired access token for Portcullis or for this service"));
    }
    const user = subject.principal;
    const who = { userId: user.subject, sessionId: user.sessionId || undefined };
    if (user.kind !== "user") {
      return refused({ outcome: "denied", detail: { reason: "service_subject" } }, badSubject("must be a user's access token, not a service's"));
    }
    if (user.expiresAt * 1000 <= this.now()) {
      return refused({ outcome: "failure", ...who, detail: { reason: "subject_token_invalid" } }, badSubject("has expired"));
    }
    let current: Principal;
    try {
      current = this.sessions.check(user);
    } catch (error) {
      // UNAVAILABLE (the feed cannot confirm revocations) is not the token's fault: it stays as it is.
      if (!(error instanceof ConnectError && error.code === Code.Unauthenticated)) throw error;
      return refused({ outcome: "denied", ...who, detail: { reason: "session_revoked" } }, badSubject("its session has been signed out"));
    }

    const account = await serviceAccountStore.find(this.db, client);
    if (!account || account.disable_time) {
      return refused({ outcome: "denied", ...who, detail: { reason: "service_disabled" } }, permissionDenied("SERVICE_DISABLED", "this service account is disabled"));
    }
    // Portcullis's own audience would turn a token bound to one service back into one good for every Portcullis call.
    if (audience === this.settings.ownAudience || !account.audiences.includes(audience)) {
      return refused(
        { outcome: "denied", ...who, detail: { reason: "audience_not_allowed" } },
        permissionDenied("AUDIENCE_NOT_ALLOWED", `this service may not exchange tokens for the audience ${audience}`, { audience }),
      );
    }

    const { token, expiresAt, tokenId } = await this.tokens.issue(
      {
        kind: "user",
        subject: current.subject,
        sessionId: current.sessionId,
        sessionExpiresAt: current.sessionExpiresAt,
        deviceId: current.deviceId,
        kycLevel: current.kycLevel,
        kycStatus: current.kycStatus,
        permissions: current.permissions,
        amr: current.amr,
        // A downstream service's policy may ask for a step-up too: the exchanged token proves what the user's did.
        aal: current.aal,
        mfaTime: current.mfaTime,
        mfaEnrolled: current.mfaEnrolled,
        emailVerified: subject.emailVerified,
      },
      // RFC 8693 §4.1: an earlier exchange's actor stays, nested under the caller.
      { audience, ttlSeconds: this.settings.ttlSeconds, notAfter: user.expiresAt, actor: { sub: client, ...(subject.actor && { act: subject.actor }) } },
    );
    // The two token ids (not secrets) tie the new token to the one it came from and to its later use.
    await audit(this.db, call, {
      event: "token.exchange",
      outcome: "success",
      ...who,
      detail: { client_id: client, audience, jti: tokenId, subject_jti: user.tokenId },
    });
    return { token, expiresInSeconds: Math.max(0, Math.round((expiresAt.getTime() - this.now()) / 1000)) };
  }
}

/** RFC 8693's invalid_grant: the subject token will not do. */
function badSubject(description: string): ConnectError {
  return invalidArgument([{ field: "subject_token", description }]);
}
