import { audit } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { unauthenticated } from "../kernel/errors.js";
import type { Database } from "../platform/database.js";
import { sessionStore } from "../session/store.js";
import type { AccessTokens } from "../tokens/access-token.js";
import { amrOf } from "../tokens/token-issuer.js";
import { SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import type { SecondFactorProof, SecondFactors } from "./second-factors.js";

export interface SteppedUp {
  accessToken: string;
  expiresAt: Date;
}

/**
 * Raises the caller's current session to assurance level 2 with a second
 * factor proved now, so calls whose policy asks for a recent one pass, and
 * gives a fresh access token saying so. The session keeps the level, so
 * tokens refreshed from it keep it too.
 */
export class StepUps {
  constructor(
    private readonly db: Database,
    private readonly factors: Pick<SecondFactors, "verify">,
    private readonly tokens: AccessTokens,
  ) {}

  async stepUp(principal: Principal, proof: SecondFactorProof, origin: CallOrigin): Promise<SteppedUp> {
    const who = { userId: principal.subject, sessionId: principal.sessionId };
    // Wrong codes are counted and audited by the check itself (mfa.factor_failed).
    const factor = await this.factors.verify(principal.subject, proof, origin);
    const session = await this.db.transaction(async (tx) => {
      const stepped = await sessionStore.stepUp(tx, principal.sessionId, principal.subject);
      if (stepped) await audit(tx, origin, { event: "mfa.step_up", outcome: "success", ...who, detail: { factor } });
      return stepped;
    });
    if (!session) throw unauthenticated("SESSION_REVOKED", "this session has been signed out; sign in again");

    const { token, expiresAt } = await this.tokens.issue({
      kind: "user",
      subject: session.user_id,
      sessionId: session.id,
      sessionExpiresAt: Math.floor(session.expire_time.getTime() / 1000),
      deviceId: session.device_id,
      kycLevel: session.kyc_level,
      kycStatus: session.kyc_status,
      permissions: session.permissions,
      amr: amrOf({ signInMethod: SignInMethod[session.sign_in_method], aal: 2, secondFactor: factor }),
      emailVerified: session.email_verified,
      aal: 2,
      mfaTime: Math.floor(session.mfa_time.getTime() / 1000),
      mfaEnrolled: true,
    });
    return { accessToken: token, expiresAt };
  }
}
