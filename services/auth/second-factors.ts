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
const fewRecoveryCodes = 2;

/** Who is told of what a check found; each runs after the check commits, and returns at once. */
export interface FactorNotices {
  /** A user down to few recovery codes. */
  fewLeft(userId: string, remaining: number, origin: CallOrigin): void;
  /** A user whose wrong codes just spent the budget: locked out for `lockSeconds`. */
  budgetExhausted(userId: string, lockSeconds: number): void;
}

export type Checked =
  | { kind: "ok"; method: FactorMethod; remaining?: number }
  | { kind: "wrong"; field: string; lockSeconds?: number }
  | { kind: "spent"; retryAfterMs: number }
  | { kind: "none" };

/** The refusal of a code that is not the user's right now: one answer for wrong, replayed and used codes. */
const wrongFactor = (field: string) => invalidArgument([{ field, description: "the code is wrong or was already used" }]);

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
    private readonly notices?: FactorNotices,
  ) {}

  get failureWindowSeconds(): number {
    return this.settings.failureWindowSeconds;
  }

  /**
   * Checks `proof` and spends it; returns which factor it was. Throws
   * INVALID_ARGUMENT naming the proof's field when the code is wrong (or was
   * used), RESOURCE_EXHAUSTED once the user's wrong codes reach the budget
   * (until the oldest leaves the window), FAILED_PRECONDITION MFA_NOT_ENABLED
   * when the user has no second factor. Audits every wrong code
   * (mfa.factor_failed) and every recovery code used (mfa.recovery_code_used);
   * the caller audits what the factor was for. Tells a user down to few
   * recovery codes to make new ones.
   */
  async verify(userId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<FactorMethod> {
    const checked = await this.db.transaction((tx) => this.verifyIn(tx, userId, proof, origin));
    return this.settle(userId, checked, origin, { warnFewLeft: true });
  }

  /**
   * `verify` inside the caller's transaction, for a caller whose own change
   * must stand or fall with the factor's use: reports rather than throws, so
   * that the failure count commits; `settle` then makes it the answer.
   */
  async verifyIn(tx: Sql, userId: string, proof: SecondFactorProof, origin: CallOrigin): Promise<Checked> {
    const factor = await mfaStore.lock(tx, userId, this.settings.failureWindowSeconds);
    if (!factor?.confirmed) return { kind: "none" };
    return this.check(tx, userId, factor, proof, origin);
  }

  /**
   * After the check's transaction committed: the notices it calls for, and
   * its answer (the method, or the refusal thrown). `warnFewLeft`: whether to
   * tell a user down to few recovery codes to make new ones (not when the
   * call replaces or removes them anyway).
   */
  settle(userId: string, checked: Checked, origin: CallOrigin, { warnFewLeft }: { warnFewLeft: boolean }): FactorMethod {
    if (checked.kind === "wrong" && checked.lockSeconds !== undefined) this.notices?.budgetExhausted(userId, checked.lockSeconds);
    if (warnFewLeft && checked.kind === "ok" && checked.remaining !== undefined && checked.remaining <= fewRecoveryCodes) {
      this.notices?.fewLeft(userId, checked.remaining, origin);
    }
    return outcome(checked);
  }

  /** A proof checked in the transaction holding the factor's row lock: the user's wrong codes first, then the proof itself. */
  private check(tx: Sql, userId: string, factor: LockedFactor, proof: SecondFactorProof, origin: CallOrigin): Promise<Checked> {
    if ("totpCode" in proof) {
      return this.attempt(tx, userId, factor, { method: "totp", field: "proof.totp_code" }, origin, async () => {
        const step = matchingStep(this.openSecret(userId, factor.secret_sealed), proof.totpCode);
        if (step === undefined) return { reason: "wrong_code" };
        // A replay is a code the user's app showed, not a guess: refused without spending the budget.
        return (await mfaStore.useStep(tx, userId, step)) ? {} : { reason: "code_already_used", uncounted: true };
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
   * lock (`mfaStore.lock`): refused unheard once the budget is spent or a
   * lockout holds; a wrong code is counted and audited in the same
   * transaction, and reported rather than thrown so that the count commits
   * (`outcome` makes it the answer). The code that spends the budget locks the
   * user's second factors out (mfaStore.lockOut: the window, doubled for each
   * lockout that day, at most a day) and is audited as mfa.budget_exhausted.
   */
  async attempt(
    tx: Sql,
    userId: string,
    factor: LockedFactor,
    code: { method: FactorMethod; field: string },
    origin: CallOrigin,
    tryCode: () => Promise<{ reason?: string; remaining?: number; uncounted?: boolean }>,
  ): Promise<Checked> {
    const budget = this.settings.failureBudget;
    if (factor.failures >= budget || factor.locked_ms > 0) {
      await audit(tx, origin, { event: "mfa.factor_failed", outcome: "denied", userId, detail: { factor: code.method, reason: "budget_spent" } });
      return { kind: "spent", retryAfterMs: Math.max(factor.failures >= budget ? factor.retry_after_ms : 0, factor.locked_ms) };
    }
    const tried = await tryCode();
    if (tried.reason === undefined) return { kind: "ok", method: code.method, remaining: tried.remaining };
    if (tried.uncounted) {
      await audit(tx, origin, { event: "mfa.factor_failed", outcome: "failure", userId, detail: { factor: code.method, reason: tried.reason, counted: false } });
      return { kind: "wrong", field: code.field };
    }
    await mfaStore.recordFailure(tx, userId, budget, this.settings.failureWindowSeconds);
    const failures = factor.failures + 1;
    await audit(tx, origin, { event: "mfa.factor_failed", outcome: "failure", userId, detail: { factor: code.method, reason: tried.reason, failures, budget } });
    if (failures < budget) return { kind: "wrong", field: code.field };
    const lockSeconds = await mfaStore.lockOut(tx, userId, this.settings.failureWindowSeconds);
    await audit(tx, origin, { event: "mfa.budget_exhausted", outcome: "denied", userId, detail: { failures, lock_seconds: lockSeconds } });
    return { kind: "wrong", field: code.field, lockSeconds };
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
function outcome(checked: Checked): FactorMethod {
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
