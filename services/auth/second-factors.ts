import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { failedPrecondition, invalidArgument, rateLimited } from "../kernel/errors.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import type { Envelope } from "../platform/envelope.js";
import { mfaStore, type LockedFactor } from "./mfa-store.js";
import type { RecoveryCodeHashes } from "./recovery-codes.js";
import { matchingStep } from "./totp.js";

/** A second factor given as proof: a code from the app, or a recovery code. */
export type SecondFactorProof = { totpCode: string } | { recoveryCode: string };

export type FactorMethod = "totp" | "recovery_code";

/** Unused recovery codes at or below which the user is told to make new ones. */
export const fewRecoveryCodes = 2;

/** Who is told when a user is down to few recovery codes; runs after the use commits. */
export type FewRecoveryCodesNotice = (userId: string, remaining: number, origin: CallOrigin) => void;

export type Checked =
  | { kind: "ok"; method: FactorMethod; remaining?: number }
  | { kind: "wrong"; field: string }
  | { kind: "spent"; retryAfterMs: number }
  | { kind: "none" };

/** The refusal of a code that is not the user's right now: one answer for wrong, replayed and used codes. */
export const wrongFactor = (field: string) => invalidArgument([{ field, description: "the code is wrong" }]);

/**
 * The one check of a second factor, for every caller (VerifyMfa, StepUp,
 * DisableTotp, RegenerateRecoveryCodes): a TOTP code whose step was not used
 * before, or an unused recovery code, which it uses up. Each check holds the
 * user's factor row lock, so wrong codes are counted against the user's
 * budget exactly, and a TOTP step is accepted once, across instances.
 */
export class SecondFactors {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["mfa"],
    private readonly secrets: Envelope,
    private readonly recoveryHashes: RecoveryCodeHashes,
    private readonly fewLeft?: FewRecoveryCodesNotice,
  ) {}

  get failureWindowSeconds(): number {
    return this.settings.failureWindowSeconds;
  }

  /** Whether the user has TOTP on (and so recovery codes): sign-in and step-up ask a second factor only of such accounts. */
  enrolled(userId: string): Promise<boolean> {
    return mfaStore.enrolled(this.db, userId);
  }

  /**
   * Checks `proof` and spends it; returns which factor it was. Throws
   * INVALID_ARGUMENT naming the proof's field when the code is wrong (or was
   * used), RESOURCE_EXHAUSTED once the user's wrong codes reach the budget
   * (until the oldest leaves the window), FAILED_PRECONDITION MFA_NOT_ENABLED
   * when the user has no second factor. Audits every wrong code
   * (mfa.factor_failed) and every recovery code used (mfa.recovery_code_used);
   * the caller audits what the factor was for.
   */
  async verify(userId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<FactorMethod> {
    const checked = await this.db.transaction(async (tx): Promise<Checked> => {
      const factor = await mfaStore.lock(tx, userId, this.settings.failureWindowSeconds);
      if (!factor?.confirmed) return { kind: "none" };
      return this.check(tx, userId, factor, proof, origin);
    });
    if (checked.kind === "ok" && checked.remaining !== undefined && checked.remaining <= fewRecoveryCodes) this.fewLeft?.(userId, checked.remaining, origin);
    return outcome(checked);
  }

  /** A proof checked in the transaction holding the factor's row lock: the user's wrong codes first, then the proof itself. */
  private check(tx: Sql, userId: string, factor: LockedFactor, proof: SecondFactorProof, origin: CallOrigin): Promise<Checked> {
    if ("totpCode" in proof) {
      return this.attempt(tx, userId, factor, { method: "totp", field: "proof.totp_code" }, origin, async () => {
        const step = matchingStep(this.openSecret(userId, factor.secret_sealed), proof.totpCode);
        if (step === undefined) return { reason: "wrong_code" };
        return (await mfaStore.useStep(tx, userId, step)) ? {} : { reason: "code_already_used" };
      });
    }
    return this.attempt(tx, userId, factor, { method: "recovery_code", field: "proof.recovery_code" }, origin, async () => {
      const remaining = await mfaStore.useRecoveryCode(tx, userId, this.recoveryHashes.of(userId, proof.recoveryCode));
      if (remaining === undefined) return { reason: "wrong_or_used_code" };
      await audit(tx, origin, { event: "mfa.recovery_code_used", outcome: "success", userId, detail: { remaining } });
      return { remaining };
    });
  }

  /**
   * One try of a code, in the transaction that holds the user's factor row
   * lock (`mfaStore.lock`): refused unheard once the budget is spent; a wrong
   * code is counted and audited in the same transaction, and reported rather
   * than thrown so that the count commits (`outcome` makes it the answer).
   */
  async attempt(
    tx: Sql,
    userId: string,
    factor: LockedFactor,
    code: { method: FactorMethod; field: string },
    origin: CallOrigin,
    tryCode: () => Promise<{ reason?: string; remaining?: number }>,
  ): Promise<Checked> {
    if (factor.failures >= this.settings.failureBudget) {
      await audit(tx, origin, { event: "mfa.factor_failed", outcome: "denied", userId, detail: { factor: code.method, reason: "budget_spent" } });
      return { kind: "spent", retryAfterMs: factor.retry_after_ms };
    }
    const tried = await tryCode();
    if (tried.reason === undefined) return { kind: "ok", method: code.method, remaining: tried.remaining };
    await mfaStore.recordFailure(tx, userId, this.settings.failureBudget, this.settings.failureWindowSeconds);
    await audit(tx, origin, {
      event: "mfa.factor_failed",
      outcome: "failure",
      userId,
      detail: { factor: code.method, reason: tried.reason, failures: factor.failures + 1, budget: this.settings.failureBudget },
    });
    return { kind: "wrong", field: code.field };
  }

  sealSecret(userId: string, secret: string): string {
    return this.secrets.seal(secret, sealContext(userId));
  }

  openSecret(userId: string, sealed: string): string {
    return this.secrets.open(sealed, sealContext(userId));
  }
}

/** The sealed secret is bound to its user's row: copied to another account it does not open. */
const sealContext = (userId: string) => `totp_factor:${userId}`;

/** Turns a check into its answer: the method, or the refusal to throw. */
export function outcome(checked: Checked): FactorMethod {
  switch (checked.kind) {
    case "ok":
      return checked.method;
    case "wrong":
      throw wrongFactor(checked.field);
    case "spent":
      throw rateLimited("mfa_failure_budget", checked.retryAfterMs);
    case "none":
      throw failedPrecondition("MFA_NOT_ENABLED", "this account has no second factor");
  }
}
