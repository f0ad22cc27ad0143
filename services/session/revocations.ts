import { unauthenticated } from "../platform/errors.js";
import type { Principal } from "../tokens/access-token.js";
import type { SessionGate } from "../policy/chain.js";

/**
 * The sessions this instance knows to be revoked, each kept until every token
 * of it has expired. The chain asks it on every authenticated call, so it never
 * touches the database.
 */
export class RevocationList implements SessionGate {
  private readonly revoked = new Map<string, number>();

  revoke(sessionId: string, untilMs: number): void {
    this.revoked.set(sessionId, untilMs);
  }

  check(principal: Principal): void {
    if (this.revoked.has(principal.sessionId)) {
      throw unauthenticated("SESSION_REVOKED", "this session has been signed out; sign in again");
    }
  }

  prune(nowMs: number): void {
    for (const [sessionId, until] of this.revoked) if (until <= nowMs) this.revoked.delete(sessionId);
  }
}
