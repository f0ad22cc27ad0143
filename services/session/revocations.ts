import type { Principal } from "../kernel/call.js";
import { unauthenticated } from "../kernel/errors.js";

/**
 * What the feed carries: sessions revoked, users whose KYC level was lowered
 * (tokens issued before `sinceMs`, or within a safety margin after it, must
 * not count above `level`), and users who lost a permission (such tokens keep
 * only the `permissions` the user still holds), and users who turned on a
 * second factor (such tokens, whose `mfa` claim says none, count as saying
 * one, so the chain asks them to step up). Each matters until `untilMs`,
 * when every token it could concern has expired.
 */
export type FeedEvent =
  | { kind: "revoked"; sessionIds: string[]; untilMs: number }
  | { kind: "kyc_lowered"; userId: string; level: number; sinceMs: number; untilMs: number }
  | { kind: "permissions_lowered"; userId: string; permissions: string[]; sinceMs: number; untilMs: number }
  | { kind: "mfa_enrolled"; userId: string; sinceMs: number; untilMs: number };

/**
 * How long after a lowering's `sinceMs` a token may still have been issued
 * with the old level. `sinceMs` is the lowering transaction's start, by
 * Postgres's clock; a refresh that read the user's row before that
 * transaction committed signs its token afterwards, by Node's clock. So the
 * margin covers the skew between the two clocks (the tolerance we already
 * grant issuers) plus the lowering transaction's run to commit, waits on the
 * user's row lock included, and the refresh's read-to-sign time: 10 seconds
 * more is ample for both. Capping only ever lowers a token to the new level,
 * so it costs nothing to tokens that carry it; the one casualty is a user
 * approved up again within the margin, held at the lowered level until the
 * next refresh. A permission taken away races refreshes the same way, and
 * gets the same margin (a permission granted again within it waits for the
 * next refresh likewise).
 */
export function kycCapMarginMs(clockToleranceSeconds: number): number {
  return (clockToleranceSeconds + 10) * 1000;
}

/** Whether a token issued at `issuedAtSeconds` (its `iat`) may predate a KYC lowering stamped `sinceMs`. */
export function mayPredateLowering(issuedAtSeconds: number, sinceMs: number, marginMs: number): boolean {
  return issuedAtSeconds * 1000 <= sinceMs + marginMs;
}

/**
 * What every instance holds in memory so the chain checks each call without a
 * database read: the sessions revoked, and the KYC levels and permissions
 * lowered, whose tokens may still be alive. Fed by the RevocationFeed;
 * applying an event twice changes nothing.
 */
export class Revocations {
  private readonly revoked = new Map<string, number>();
  private readonly kycCaps = new Map<string, { level: number; sinceMs: number; untilMs: number }>();
  private readonly permissionCaps = new Map<string, { permissions: ReadonlySet<string>; sinceMs: number; untilMs: number }>();
  private readonly enrolments = new Map<string, { sinceMs: number; untilMs: number }>();
  private readonly kycCapMarginMs: number;

  constructor(clockToleranceSeconds: number) {
    this.kycCapMarginMs = kycCapMarginMs(clockToleranceSeconds);
  }

  /**
   * The principal as it stands now: refused if its session was revoked or has
   * reached its absolute expiry (a token claim), its KYC level capped and its
   * permissions cut to those still held if lowered since the token was issued,
   * and known to have a second factor if one was turned on since (with the
   * same margin: a token refreshed as it was turned on may not say so).
   */
  check(principal: Principal): Principal {
    if (this.revoked.has(principal.sessionId)) {
      throw unauthenticated("SESSION_REVOKED", "this session has been signed out; sign in again");
    }
    if (principal.sessionExpiresAt && principal.sessionExpiresAt * 1000 <= Date.now()) {
      throw unauthenticated("SESSION_REVOKED", "this session has ended; sign in again");
    }
    let current = principal;
    const cap = this.kycCaps.get(principal.subject);
    if (cap && principal.kycLevel > cap.level && mayPredateLowering(principal.issuedAt, cap.sinceMs, this.kycCapMarginMs)) {
      current = { ...current, kycLevel: cap.level };
    }
    const held = this.permissionCaps.get(principal.subject);
    if (held && principal.permissions.some((p) => !held.permissions.has(p)) && mayPredateLowering(principal.issuedAt, held.sinceMs, this.kycCapMarginMs)) {
      current = { ...current, permissions: principal.permissions.filter((p) => held.permissions.has(p)) };
    }
    const enrolled = this.enrolments.get(principal.subject);
    if (enrolled && !principal.mfaEnrolled && mayPredateLowering(principal.issuedAt, enrolled.sinceMs, this.kycCapMarginMs)) {
      current = { ...current, mfaEnrolled: true };
    }
    return current;
  }

  /** How many sessions or users the event told us something new about: 0 when it was known already. */
  apply(event: FeedEvent): number {
    if (event.kind === "revoked") {
      let news = 0;
      for (const sessionId of event.sessionIds) {
        if (!this.revoked.has(sessionId)) news++;
        this.revoked.set(sessionId, event.untilMs);
      }
      return news;
    }
    if (event.kind === "permissions_lowered") return this.applyPermissions(event);
    if (event.kind === "mfa_enrolled") return this.applyEnrolment(event);
    // A kind this version does not know (from a newer publisher) tells it nothing.
    if (event.kind !== "kyc_lowered") return 0;
    // The same lowering read again later (polls overlap) carries the user's level by then, which a new approval may have raised.
    const known = this.kycCaps.get(event.userId);
    if (!known || known.sinceMs < event.sinceMs || (known.sinceMs === event.sinceMs && event.level < known.level)) {
      this.kycCaps.set(event.userId, event);
      return 1;
    }
    return 0;
  }

  /**
   * The latest lowering stands: the permissions it carries are the user's
   * truth as of then. The same lowering read again later (polls overlap)
   * carries the user's permissions by then, which a new grant may have
   * widened: only what both say is held stands.
   */
  private applyPermissions(event: Extract<FeedEvent, { kind: "permissions_lowered" }>): number {
    const known = this.permissionCaps.get(event.userId);
    if (known && known.sinceMs > event.sinceMs) return 0;
    const permissions = known?.sinceMs === event.sinceMs ? event.permissions.filter((p) => known.permissions.has(p)) : event.permissions;
    if (known?.sinceMs === event.sinceMs && permissions.length === known.permissions.size) return 0;
    this.permissionCaps.set(event.userId, { permissions: new Set(permissions), sinceMs: event.sinceMs, untilMs: event.untilMs });
    return 1;
  }

  /** The latest enrolment stands: every token issued before it may say the account has no second factor. */
  private applyEnrolment(event: Extract<FeedEvent, { kind: "mfa_enrolled" }>): number {
    const known = this.enrolments.get(event.userId);
    if (known && known.sinceMs >= event.sinceMs) return 0;
    this.enrolments.set(event.userId, { sinceMs: event.sinceMs, untilMs: event.untilMs });
    return 1;
  }

  /** Forgets what no live token can concern any more. */
  prune(nowMs: number): void {
    for (const [sessionId, until] of this.revoked) if (until <= nowMs) this.revoked.delete(sessionId);
    for (const [userId, cap] of this.kycCaps) if (cap.untilMs <= nowMs) this.kycCaps.delete(userId);
    for (const [userId, cap] of this.permissionCaps) if (cap.untilMs <= nowMs) this.permissionCaps.delete(userId);
    for (const [userId, enrolment] of this.enrolments) if (enrolment.untilMs <= nowMs) this.enrolments.delete(userId);
  }
}
