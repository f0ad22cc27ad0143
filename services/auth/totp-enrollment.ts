import QRCode from "qrcode";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { failedPrecondition, unauthenticated } from "../kernel/errors.js";
import type { Database } from "../platform/database.js";
import { userStore } from "../users/store.js";
import { mfaStore } from "./mfa-store.js";
import { newRecoveryCodes, type RecoveryCodeHashes } from "./recovery-codes.js";
import { outcome, type SecondFactorProof, type SecondFactors } from "./second-factors.js";
import { matchingStep, newTotpSecret, totpUri } from "./totp.js";

export interface TotpEnrollmentStart {
  secret: string;
  otpauthUri: string;
  qrCodeSvg: string;
}

const alreadyOn = () => failedPrecondition("TOTP_ALREADY_ENABLED", "TOTP is already on; disable it first");

/**
 * Turning TOTP on and off, and the recovery codes that come with it. A new
 * secret stays unconfirmed (and unused by sign-in) until a code from the app
 * proves the app holds it; confirming makes the recovery codes, shown once.
 */
export class TotpEnrollment {
  constructor(
    private readonly db: Database,
    private readonly factors: SecondFactors,
    private readonly recoveryHashes: RecoveryCodeHashes,
    private readonly issuer: string,
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
    const otpauthUri = totpUri(secret, this.issuer, user.email ?? user.phone_number ?? userId);
    return { secret, otpauthUri, qrCodeSvg: await QRCode.toString(otpauthUri, { type: "svg", errorCorrectionLevel: "M" }) };
  }

  /** Turns TOTP on with a code of the new secret; returns the recovery codes, which are never shown again. */
  async confirm(userId: string, code: string, origin: CallOrigin): Promise<string[]> {
    const recoveryCodes = newRecoveryCodes();
    const checked = await this.db.transaction(async (tx) => {
      const factor = await mfaStore.lock(tx, userId, this.factors.failureWindowSeconds);
      if (!factor) throw failedPrecondition("TOTP_NOT_ENROLLED", "no TOTP enrolment is waiting; call EnrollTotp first");
      if (factor.confirmed) throw alreadyOn();
      return this.factors.attempt(tx, userId, factor, { method: "totp", field: "code" }, origin, async () => {
        const step = matchingStep(this.factors.openSecret(userId, factor.secret_sealed), code);
        if (step === undefined) return { reason: "wrong_code" };
        await mfaStore.confirm(tx, userId, step);
        await mfaStore.replaceRecoveryCodes(tx, userId, recoveryCodes.map((recoveryCode) => this.recoveryHashes.of(userId, recoveryCode)));
        await audit(tx, origin, { event: "mfa.totp_enrolled", outcome: "success", userId, detail: { recovery_codes: recoveryCodes.length } });
        return {};
      });
    });
    outcome(checked);
    return recoveryCodes;
  }

  /** Turns TOTP off and removes the recovery codes, given a current code. */
  async disable(userId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<void> {
    const method = await this.factors.verify(userId, proof, origin);
    await this.db.transaction(async (tx) => {
      // Another call may have turned it off since the proof was checked.
      if (!(await mfaStore.remove(tx, userId))) throw failedPrecondition("MFA_NOT_ENABLED", "this account has no second factor");
      await audit(tx, origin, { event: "mfa.totp_disabled", outcome: "success", userId, detail: { proof: method } });
    });
  }

  /** New recovery codes in place of all the old ones, given a current code. */
  async regenerateRecoveryCodes(userId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<string[]> {
    const method = await this.factors.verify(userId, proof, origin);
    const recoveryCodes = newRecoveryCodes();
    await this.db.transaction(async (tx) => {
      const factor = await mfaStore.lock(tx, userId, this.factors.failureWindowSeconds);
      if (!factor?.confirmed) throw failedPrecondition("MFA_NOT_ENABLED", "this account has no second factor");
      await mfaStore.replaceRecoveryCodes(tx, userId, recoveryCodes.map((recoveryCode) => this.recoveryHashes.of(userId, recoveryCode)));
      await audit(tx, origin, { event: "mfa.recovery_codes_regenerated", outcome: "success", userId, detail: { proof: method, recovery_codes: recoveryCodes.length } });
    });
    return recoveryCodes;
  }
}
