import QRCode from "qrcode";
import { audit } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { failedPrecondition, unauthenticated } from "../kernel/errors.js";
import type { Database, Sql } from "../platform/database.js";
import type { FeedEvent } from "../session/revocations.js";
import { userStore } from "../users/store.js";
import type { ChangeProofs } from "./change-proof.js";
import type { MfaNotices } from "./mfa-notices.js";
import { mfaStore } from "./mfa-store.js";
import { newRecoveryCodes, type RecoveryCodeHashes } from "./recovery-codes.js";
import type { SecondFactorProof, SecondFactors } from "./second-factors.js";
import { matchingStep, newTotpSecret, totpUri } from "./totp.js";

export interface TotpEnrollmentStart {
  secret: string;
  otpauthUri: string;
  qrCodeSvg: string;
}

const alreadyOn = () => failedPrecondition("TOTP_ALREADY_ENABLED", "TOTP is already on; disable it first");
const notOn = () => failedPrecondition("MFA_NOT_ENABLED", "this account has no second factor");

/** What TotpEnrollment needs beyond the database and the factors themselves. */
export interface TotpEnrollmentDeps {
  recoveryHashes: RecoveryCodeHashes;
  issuer: string;
  proofs: ChangeProofs;
  notices: MfaNotices;
  /** Tells every instance (and guard) of an enrolment: tokens issued before it say the account has no second factor. */
  publish: (event: FeedEvent) => Promise<void>;
  accessTokenLifetimeMs: number;
}

/**
 * Turning TOTP on and off, and the recovery codes that come with it. A new
 * secret stays unconfirmed (and unused by sign-in) until a code from the app
 * proves the app holds it; confirming makes the recovery codes, shown once.
 * Confirming needs the proof a change of address needs (ChangeProofs): a
 * stolen session must not add a factor that locks the owner out. The owner's
 * confirmed address is mailed when TOTP is turned on or off.
 */
export class TotpEnrollment {
  constructor(
    private readonly db: Database,
    private readonly factors: SecondFactors,
    private readonly deps: TotpEnrollmentDeps,
  ) {}

  /** A new secret in place of any unconfirmed one, its URI (labelled with the account's email or phone) and the URI as a QR code. */
  async enroll(userId: string, origin: CallOrigin): Promise<TotpEnrollmentStart> {
    const user = await userStore.find(this.db, userId);
    if (!user) throw unauthenticated("TOKEN_INVALID", "the account no longer exists");
    const secret = newTotpSecret();
    await this.db.transaction(async (tx) => {
      if (!(await mfaStore.replaceUnconfirmed(tx, userId, this.factors.sealSecret(userId, secret)))) throw alreadyOn();
      await audit(tx, origin, { event: "mfa.totp_enrollment_started", outcome: "success", userId });
    });
    const otpauthUri = totpUri(secret, this.deps.issuer, user.email ?? user.phone_number ?? userId);
    return { secret, otpauthUri, qrCodeSvg: await QRCode.toString(otpauthUri, { type: "svg", errorCorrectionLevel: "M" }) };
  }

  /**
   * Turns TOTP on with a code of the new secret, given the change proof;
   * returns the recovery codes, which are never shown again.
   */
  async confirm(principal: Principal, request: { code: string; currentPassword: string }, origin: CallOrigin): Promise<string[]> {
    const userId = principal.subject;
    await this.deps.proofs.prove(principal, request.currentPassword, "mfa.totp_enrolled", origin, { verifiedEmail: false });
    const recoveryCodes = newRecoveryCodes();
    let confirmedAt: Date | undefined;
    const checked = await this.db.transaction(async (tx) => {
      const factor = await mfaStore.lock(tx, userId, this.factors.failureWindowSeconds);
      if (!factor) throw failedPrecondition("TOTP_NOT_ENROLLED", "no TOTP enrolment is waiting; call EnrollTotp first");
      if (factor.confirmed) throw alreadyOn();
      return this.factors.attempt(tx, userId, factor, { method: "totp", field: "code" }, origin, async () => {
        const step = matchingStep(this.factors.openSecret(userId, factor.secret_sealed), request.code);
        if (step === undefined) return { reason: "wrong_code" };
        confirmedAt = await mfaStore.confirm(tx, userId, step);
        await mfaStore.replaceRecoveryCodes(tx, userId, this.hashesOf(userId, recoveryCodes));
        await audit(tx, origin, { event: "mfa.totp_enrolled", outcome: "success", userId, sessionId: principal.sessionId, detail: { recovery_codes: recoveryCodes.length } });
        return {};
      });
    });
    this.factors.settle(userId, checked, origin, { warnFewLeft: false });
    const sinceMs = confirmedAt!.getTime();
    await this.deps.publish({ kind: "mfa_enrolled", userId, sinceMs, untilMs: sinceMs + this.deps.accessTokenLifetimeMs });
    this.deps.notices.totpTurnedOn(userId);
    return recoveryCodes;
  }

  /**
   * Turns TOTP off and removes the recovery codes, given a current code: the
   * code's check and the removal are one transaction, so a code is spent only
   * on a removal that happens.
   */
  async disable(userId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<void> {
    const checked = await this.db.transaction(async (tx) => {
      const checked = await this.factors.verifyIn(tx, userId, proof, origin);
      if (checked.kind !== "ok") return checked;
      if (!(await mfaStore.remove(tx, userId))) throw notOn();
      await audit(tx, origin, { event: "mfa.totp_disabled", outcome: "success", userId, detail: { proof: checked.method } });
      return checked;
    });
    this.factors.settle(userId, checked, origin, { warnFewLeft: false });
    this.deps.notices.totpTurnedOff(userId);
  }

  /** New recovery codes in place of all the old ones, given a current code (checked in the same transaction). */
  async regenerateRecoveryCodes(userId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<string[]> {
    const recoveryCodes = newRecoveryCodes();
    const checked = await this.db.transaction(async (tx) => {
      const checked = await this.factors.verifyIn(tx, userId, proof, origin);
      if (checked.kind !== "ok") return checked;
      await mfaStore.replaceRecoveryCodes(tx, userId, this.hashesOf(userId, recoveryCodes));
      await audit(tx, origin, { event: "mfa.recovery_codes_regenerated", outcome: "success", userId, detail: { proof: checked.method, recovery_codes: recoveryCodes.length } });
      return checked;
    });
    this.factors.settle(userId, checked, origin, { warnFewLeft: false });
    return recoveryCodes;
  }

  private hashesOf(userId: string, recoveryCodes: string[]): Buffer[] {
    return recoveryCodes.map((recoveryCode) => this.deps.recoveryHashes.of(userId, recoveryCode));
  }
}

/**
 * Enrolments recent enough that tokens issued before them may still be alive
 * (only those of the last `windowMs` when given): the revocation feed's
 * catch-up and poll read these beside the session domain's own changes
 * (app.ts joins them; the session floor cannot read the auth domain's tables).
 */
export async function recentTotpEnrolments(sql: Sql, accessTokenLifetimeMs: number, windowMs = accessTokenLifetimeMs): Promise<FeedEvent[]> {
  const rows = await mfaStore.recentConfirmations(sql, Math.min(windowMs, accessTokenLifetimeMs) / 1000);
  return rows.map((row) => {
    const sinceMs = row.confirm_time.getTime();
    return { kind: "mfa_enrolled", userId: row.user_id, sinceMs, untilMs: sinceMs + accessTokenLifetimeMs };
  });
}
