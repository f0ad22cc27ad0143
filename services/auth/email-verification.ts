import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Violations } from "../kernel/validation.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import { isUniqueViolation } from "../platform/database-errors.js";
import type { Logger } from "../platform/logger.js";
import { userStore } from "../users/store.js";
import { contactVerificationStore, type VerificationRow } from "./contact-verification-store.js";
import { openVerification, refuseTakenAddress, withdrawVerification, type OpenedVerification } from "./contact-verifications.js";
import { emailProblem, maskEmail, normalizeEmail } from "./email.js";
import { MailDeliveryError, type Mail, type Mailer } from "./mail.js";
import { mailTemplates } from "./mail-templates.js";
import { newCode, newLinkToken, type SecretMacs } from "./one-time-secrets.js";
import { passwordResetStore } from "./store.js";
import { wrongCode, wrongCodeDetail } from "./wrong-code.js";

/** An email verification committed, and the mail with its code and link, to send once it has. */
export interface OpenedEmailVerification extends OpenedVerification {
  mail: Mail;
}

/**
 * Proof that an email address is a user's: a code and a link token mailed to
 * it, kept as keyed hashes. A code is tried with its address, attempts
 * counted in the statement that compares it, and wrong ones spent from the
 * user's daily budget across codes; a link is used up in the statement that
 * finds it, so exactly one use wins, and works whatever the budget.
 * Confirming a new address (ChangeEmail) makes it the account's email.
 */
export class EmailVerifications {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["account"],
    private readonly macs: SecretMacs,
    private readonly mailer: Mailer,
    private readonly logger: Logger,
  ) {}

  /**
   * Opens a verification of `address` for the user in `tx`, in place of
   * their open one, under the user's row lock (the caller's). The caller
   * sends `mail` once `tx` has committed, and if it cannot be sent takes the
   * verification back with withdrawVerification.
   */
  async open(tx: Sql, userId: string, address: string): Promise<OpenedEmailVerification> {
    const code = newCode();
    const token = newLinkToken();
    const opened = await openVerification(tx, this.settings, {
      userId,
      channel: "email",
      address,
      codeMac: this.macs.code(address, code),
      linkMac: this.macs.link(token),
    });
    return { ...opened, mail: mailTemplates.verifyAddress(this.settings, address, { code, token, ttlSeconds: this.settings.verificationTtlSeconds }) };
  }

  /**
   * For a sign-in refused because the address is not confirmed: mails a new
   * code and link unless one went to it within the resend interval. True if
   * one was sent. A mail the provider refuses is only logged, and the code it
   * replaced works again: the sign-in's answer is the same either way.
   */
  async resend(userId: string, address: string): Promise<boolean> {
    const opened = await this.db.transaction(async (tx) => {
      // Parallel sign-ins queue here, so the second sees the first one's code and sends none.
      await userStore.lock(tx, userId);
      const open = await contactVerificationStore.open(tx, userId, "email");
      if (open && open.address === address && open.age_ms < this.settings.verificationResendSeconds * 1000) return undefined;
      return this.open(tx, userId, address);
    });
    if (!opened) return false;
    try {
      await this.mailer.send(opened.mail);
      return true;
    } catch (error) {
      await this.db.transaction((tx) => withdrawVerification(tx, opened));
      if (!(error instanceof MailDeliveryError)) throw error;
      this.logger.warn({ userId, provider: error.provider }, "verification mail not resent at sign-in");
      return false;
    }
  }

  /** VerifyEmail: the address mailed `code`, or a link's `token` alone. Returns the address now confirmed. */
  async verify(request: { email: string; code: string; token: string }, origin: CallOrigin): Promise<string> {
    const byCode = request.code !== "";
    const email = normalizeEmail(request.email);
    if (byCode) new Violations().add("email", emailProblem(email)).throwIfAny();
    const method = byCode ? "code" : "link";

    let proven: VerificationRow | undefined;
    try {
      await this.db.transaction(async (tx) => {
        proven = byCode ? await this.tryCode(tx, email, request.code, origin) : await this.useLink(tx, request.token, origin);
        if (proven) await this.confirm(tx, proven, method, origin);
      });
    } catch (error) {
      if (!isUniqueViolation(error) || !proven) throw error;
      const entry = { event: "email.change", userId: proven.user_id, detail: { method, reason: "email_taken" } };
      throw await refuseTakenAddress(this.db, origin, proven.id, entry, "this address belongs to another account");
    }
    if (!proven) throw wrongCode(byCode ? "code" : "token");
    return proven.address;
  }

  /**
   * One try of a code for an address; the verification it proves, if right.
   * Wrong tries are audited in `tx` against no account and with the address
   * masked: the open verifications of an address may be several accounts',
   * and none of their owners is to see who typed codes for it, or from where.
   */
  private async tryCode(tx: Sql, address: string, code: string, origin: CallOrigin): Promise<VerificationRow | undefined> {
    const tries = await contactVerificationStore.tryEmailCode(tx, address, this.macs.code(address, code), this.settings.codeFailureBudget);
    const right = tries.find((one) => one.matched);
    if (right) return right;
    const failed = (detail: Record<string, string | number | boolean>) =>
      audit(tx, origin, { event: "email.verify", outcome: "failure", detail: { method: "code", email: maskEmail(address), ...detail } });
    // None counted: no open verification, or its owners have no wrong codes left today.
    if (tries.length === 0) await failed({ reason: "no_open_verification" });
    for (const wrong of tries) await failed(wrongCodeDetail(wrong));
    return undefined;
  }

  private async useLink(tx: Sql, token: string, origin: CallOrigin): Promise<VerificationRow | undefined> {
    const used = await contactVerificationStore.useLink(tx, this.macs.link(token));
    if (!used) await audit(tx, origin, { event: "email.verify", outcome: "failure", detail: { method: "link", reason: "no_open_verification" } });
    return used;
  }

  /** The address becomes the user's confirmed email: their own one confirmed, or a new one replacing it. */
  private async confirm(tx: Sql, proven: VerificationRow, method: string, origin: CallOrigin): Promise<void> {
    const confirmed = await userStore.setConfirmedEmail(tx, proven.user_id, proven.address);
    const changed = confirmed?.previous !== proven.address;
    // A reset mailed to the old address must not outlive it.
    if (changed) await passwordResetStore.closeOpen(tx, proven.user_id);
    await audit(tx, origin, {
      event: changed ? "email.change" : "email.verify",
      outcome: "success",
      userId: proven.user_id,
      detail: changed ? { method, added: confirmed?.previous === null } : { method },
    });
  }
}
