import { ConnectError, type Code } from "../../services/kernel/errors.js";
import type { Principal } from "../../services/kernel/call.js";
import type { RevocationFeed } from "../../services/session/feed.js";

/** A user's principal as a verified access token gives it, issued now; `claims` override. */
export function principal(claims: Partial<Principal> = {}): Principal {
  const issuedAt = Math.floor(Date.now() / 1000);
  return {
    kind: "user", subject: "user-1", sessionId: "session-1", deviceId: "device", kycLevel: 2, kycStatus: "", permissions: [], amr: ["otp"],
    sessionExpiresAt: 0, tokenId: "token", issuedAt, expiresAt: issuedAt + 900, ...claims,
  };
}

/** The code `check` refuses with, or undefined if it lets the principal through. */
export function refusal(feed: RevocationFeed, who: Principal = principal()): Code | undefined {
  try {
    feed.check(who);
    return undefined;
  } catch (error) {
    if (error instanceof ConnectError) return error.code;
    throw error;
  }
}
