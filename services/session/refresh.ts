import type { MessageInitShape } from "@bufbuild/protobuf";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { unauthenticated } from "../kernel/errors.js";
import type { Database } from "../platform/database.js";
import { refreshes } from "../platform/metrics.js";
import type { AccessTokens } from "../tokens/access-token.js";
import { hashRefreshToken, type RefreshTokens } from "../tokens/refresh-token.js";
import { issueTokenPair } from "../tokens/token-issuer.js";
import { SignInMethod, type TokenPairSchema } from "../../gen/portcullis/v1/common_pb.js";
import { Rotations } from "./rotations.js";
import type { Sessions } from "./sessions.js";
import { sessionStore, type RefreshedSession, type SecondFactorSql } from "./store.js";

const refreshed = {
  rotated: refreshes.labels("rotated"),
  retry: refreshes.labels("retry"),
  reuseDetected: refreshes.labels("reuse_detected"),
  expired: refreshes.labels("expired"),
  revoked: refreshes.labels("revoked"),
  invalid: refreshes.labels("invalid"),
};

export interface RefreshSettings {
  reuseIntervalSeconds: number;
  idleTimeoutSeconds: number;
}

/**
 * Refresh-token rotation (RFC 9700): each token is used once, in one statement
 * that marks it used, extends the session, stores its successor and audits
 * (see Rotations). Presenting a used token again inside the reuse interval
 * returns the same successor (two tabs, a lost response); after it, the
 * session is revoked as stolen.
 */
export class RefreshRotation {
  private readonly rotations: Rotations;

  constructor(
    private readonly db: Database,
    private readonly tokens: AccessTokens,
    private readonly sessions: Sessions,
    private readonly refreshTokens: RefreshTokens,
    private readonly settings: RefreshSettings,
    /** Applies the per-user refresh limit once the token has named its user. */
    private readonly limitUser: (userId: string) => Promise<void>,
    /** Tells the new access token whether the account has a second factor. */
    private readonly enrolled: SecondFactorSql,
  ) {
    this.rotations = new Rotations(db, settings.idleTimeoutSeconds, enrolled);
  }

  async refresh(token: string, origin: CallOrigin): Promise<MessageInitShape<typeof TokenPairSchema>> {
    const invalid = async () => {
      refreshed.invalid.inc();
      await audit(this.db, origin, { event: "token.refresh", outcome: "failure", detail: { reason: "unknown_token" } });
      return unauthenticated("TOKEN_INVALID", "the refresh token is not valid; sign in again");
    };
    // A token we did not mint is refused before it can touch the database or anyone's limit.
    const userId = this.refreshTokens.userOf(token);
    if (!userId) throw await invalid();
    await this.limitUser(userId);

    const hash = hashRefreshToken(token);
    const successor = this.refreshTokens.successorOf(token, userId);
    const rotated = await this.rotations.rotate({ tokenHash: hash, successorHash: hashRefreshToken(successor), origin });
    if (rotated) {
      refreshed.rotated.inc();
      return this.pair(rotated, successor);
    }
    return this.refreshUsedToken(hash, successor, origin, invalid);
  }

  /**
   * The token was used already (or just now, by a concurrent call), its
   * session has ended, or it is unknown. A retry gets the same successor only
   * while that successor is itself unused: once the client has moved on, the
   * old token coming back means someone else holds it.
   */
  private async refreshUsedToken(hash: Buffer, successor: string, origin: CallOrigin, invalid: () => Promise<Error>) {
    const row = await sessionStore.usedToken(this.db, hash, hashRefreshToken(successor), this.settings.reuseIntervalSeconds, this.enrolled);
    if (!row) throw await invalid();
    if (row.revoked) {
      refreshed.revoked.inc();
      throw unauthenticated("SESSION_REVOKED", "this session has been signed out; sign in again");
    }
    if (!row.session_live || !row.used) {
      refreshed.expired.inc();
      throw unauthenticated("TOKEN_EXPIRED", "this session has expired; sign in again");
    }
    if (row.retry) {
      refreshed.retry.inc();
      await audit(this.db, origin, { event: "token.refresh", outcome: "success", userId: row.user_id, sessionId: row.id, detail: { retry: true } });
      return this.pair(row, successor);
    }
    refreshed.reuseDetected.inc();
    await this.sessions.end({
      which: { sessionIds: [row.id] },
      reason: "refresh_token_reused",
      origin,
      audit: () => [{ event: "token.reuse_detected", outcome: "denied", userId: row.user_id, sessionId: row.id }],
    });
    throw unauthenticated("SESSION_REVOKED", "this refresh token was already used; the session has been signed out");
  }

  private pair(row: RefreshedSession, refreshToken: string) {
    return issueTokenPair(
      this.tokens,
      {
        userId: row.user_id,
        kycLevel: row.kyc_level,
        kycStatus: row.kyc_status,
        permissions: row.permissions,
        emailVerified: row.email_verified,
        mfaEnrolled: row.mfa_enrolled,
      },
      { id: row.id, deviceId: row.device_id, signInMethod: SignInMethod[row.sign_in_method], expireTime: row.expire_time, aal: row.aal, mfaTime: row.mfa_time },
      refreshToken,
    );
  }
}
