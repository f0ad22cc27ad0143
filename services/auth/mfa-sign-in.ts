import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { invalidArgument, unauthenticated } from "../kernel/errors.js";
import { newSecretId, rowIdOf } from "../kernel/uuid.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import type { SignInAnswers } from "../session/sign-in-answers.js";
import type { DeviceInput, Sessions } from "../session/sessions.js";
import { userStore } from "../users/store.js";
import { DeviceType, SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import type { MfaChallengeSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { VerifyMfaResponseSchema } from "../../gen/portcullis/v1/mfa_service_pb.js";
import { mfaChallengeStore } from "./mfa-challenge-store.js";
import type { Checked, SecondFactorProof, SecondFactors } from "./second-factors.js";

/** A first factor that passed, for an account with a second factor. */
export interface FirstFactor {
  userId: string;
  method: "pwd" | "otp";
  device: DeviceInput;
  origin: CallOrigin;
}

const signInMethods = { pwd: SignInMethod.PASSWORD, otp: SignInMethod.OTP } as const;

const deadChallenge = () => unauthenticated("MFA_CHALLENGE_INVALID", "this sign-in has expired or can no longer be completed; sign in again");

/**
 * The second step of a sign-in for an account with a second factor: the
 * first factor opens a challenge instead of a session, and VerifyMfa with a
 * TOTP or recovery code completes it, on the first factor's device and from
 * its IP. The challenge id is 256 random bits; only an HMAC of it is stored
 * (as the row's uuid), so a copy of the table completes nothing.
 */
export class MfaSignIn {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["mfa"],
    private readonly challengeKey: Buffer,
    private readonly factors: Pick<SecondFactors, "verifyIn" | "settle">,
    private readonly sessions: Sessions,
    private readonly answers: SignInAnswers,
  ) {}

  /** Opens a challenge inside the first factor's transaction, and audits it there. */
  async challenge(tx: Sql, first: FirstFactor): Promise<MessageInitShape<typeof MfaChallengeSchema>> {
    const { id: challengeId, rowId: id } = newSecretId(this.challengeKey);
    const expireTime = new Date(Date.now() + this.settings.challengeTtlSeconds * 1000);
    await mfaChallengeStore.open(tx, {
      id,
      userId: first.userId,
      method: first.method,
      deviceId: first.device.deviceId,
      deviceType: DeviceType[first.device.deviceType] ?? DeviceType[DeviceType.UNSPECIFIED],
      deviceName: first.device.deviceName,
      clientIp: first.origin.clientIp,
      maxAttempts: this.settings.challengeMaxAttempts,
      expireTime,
    });
    await audit(tx, first.origin, { event: "mfa.challenge_issued", outcome: "success", userId: first.userId, detail: { method: first.method, challenge: id } });
    return { challengeId, factors: ["totp", "recovery_code"], expireTime: timestampFromDate(expireTime) };
  }

  /**
   * One transaction holds the challenge's row lock throughout: it counts the
   * attempt (so parallel tries cannot pass its limit), checks the factor, and
   * closes the challenge and creates the session. A second try meanwhile
   * waits, then finds the challenge closed: the factor it carries is not spent.
   */
  async verify(challengeId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<MessageInitShape<typeof VerifyMfaResponseSchema>> {
    const id = rowIdOf(this.challengeKey, challengeId);
    if (!id) throw invalidArgument([{ field: "challenge_id", description: "not a challenge id this server gave" }]);
    const signedIn = await this.db.transaction(async (tx) => {
      const challenge = await mfaChallengeStore.attempt(tx, id, origin.clientIp);
      if (!challenge) return { ok: false as const, audited: false, refused: undefined };
      const checked = await this.factors.verifyIn(tx, challenge.user_id, proof, origin);
      if (checked.kind !== "ok") {
        const lastAttempt = challenge.attempts >= challenge.max_attempts;
        // A challenge out of attempts is over at once, not only when it expires.
        if (lastAttempt) await mfaChallengeStore.close(tx, id);
        await this.failed(tx, origin, id, challenge.user_id, { reason: "factor_refused", attempt: challenge.attempts, last_attempt: lastAttempt });
        const refused: { userId: string; checked: Checked } = { userId: challenge.user_id, checked };
        return { ok: false as const, audited: true, refused };
      }
      await mfaChallengeStore.close(tx, id);
      // The user's row lock is the one Sessions.create relies on; it also sees a disable since the first factor.
      const user = await userStore.lock(tx, challenge.user_id);
      if (!user || user.disable_time) {
        await this.failed(tx, origin, id, challenge.user_id, { reason: "account_disabled" });
        return { ok: false as const, audited: true, refused: undefined };
      }
      const method = challenge.method as FirstFactor["method"];
      const device = {
        deviceId: challenge.device_id,
        deviceType: DeviceType[challenge.device_type as keyof typeof DeviceType] ?? DeviceType.UNSPECIFIED,
        deviceName: challenge.device_name,
      };
      const factor = checked.method;
      await audit(tx, origin, { event: "mfa.challenge_verified", outcome: "success", userId: user.id, detail: { method, factor, challenge: id } });
      const created = await this.sessions.create(tx, {
        userId: user.id,
        device,
        method: signInMethods[method],
        secondFactor: factor,
        origin,
        event: { name: "sign_in", detail: { method, second_factor: factor } },
      });
      return { ok: true as const, user, created, method, device, checked };
    });
    if (!signedIn.ok) {
      if (signedIn.refused) this.factors.settle(signedIn.refused.userId, signedIn.refused.checked, origin, { warnFewLeft: true });
      if (!signedIn.audited) await this.auditDead(origin, id);
      throw deadChallenge();
    }
    this.factors.settle(signedIn.user.id, signedIn.checked, origin, { warnFewLeft: true });
    const { user, created, method, device } = signedIn;
    return this.answers.signedIn({ user, created, device, method, mfaEnrolled: true }, origin);
  }

  /** A try that took no attempt: why, for the audit log only. */
  private async auditDead(origin: CallOrigin, id: string): Promise<void> {
    const dead = await mfaChallengeStore.deadReason(this.db, id, origin.clientIp);
    await this.failed(this.db, origin, id, dead.userId, { reason: dead.reason });
  }

  private failed(sql: Sql, origin: CallOrigin, id: string, userId: string | undefined, detail: Record<string, string | number | boolean>): Promise<void> {
    return audit(sql, origin, { event: "mfa.challenge_verified", outcome: "failure", userId, detail: { challenge: id, ...detail } });
  }
}
