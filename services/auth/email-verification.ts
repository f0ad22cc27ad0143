import { randomUUID } from "node:crypto";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Code, ConnectError, invalidArgument, unavailable } from "../kernel/errors.js";
import { Violations } from "../kernel/validation.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import type { Logger } from "../platform/logger.js";
import { userStore } from "../users/store.js";
import { contactVerificationStore, type CodeTry, type VerificationRow } from "./contact-verification-store.js";
import { emailProblem, normalizeEmail } from "./email.js";
import { MailDeliveryError, type Mailer } from "./mail.js";
import { mailTemplates } from "./mail-templates.js";
import { newCode, newLinkToken, type SecretMacs } from "./one-time-secrets.js";
import { passwordResetStore } from "./store.js";

/** One answer for a wrong, used, expired or never-sent code or link: none of them tells anything about the address. */
export const wrongSecret = (field: "code" | "token") =>
  invalidArgument([{ field, description: "the code is wrong or has expired; request a new one" }]);

/** The audit detail of a wrong code: which attempt it was, and whether it was the last. */
export const wrongCodeDetail = (tried: CodeTry) => ({ reason: "wrong_code", attempt: tried.attempts, closed: tried.attempts >= tried.max_attempts });

export const isUniqueViolation = (error: unknown) => (error as { code?: string }).code === "23505";

/** A mail the provider did not take: the caller has rolled back what it was for, so the person may simply try again. */
export function undeliverable(error: unknown): unknown {
  return error instanceof MailDeliveryError ? unavailable("the mail could not be sent; try again shortly") : error;
}

/**
 * Proof that an email address is a user's: a code and a link token mailed to
 * it, kept as keyed hashes. A code is tried with its address, attempts
 * counted in the statement that compares it; a link is used up in the
 * statement that finds it, so exactly one use wins. Confirming a new address
 * (ChangeEmail) makes it the account's email.
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
   * Opens a verification of `address` for the user, in place of their open
   * one, and mails its code and link from inside `tx`: if the provider does
   * not take the mail (MailDeliveryError), the caller's transaction rolls back
   * and nothing of it stays. Returns until when the code and link work.
   */
  async open(tx: Sql, userId: string, address: string): Promise<Date> {
    const ttlSeconds = this.settings.verificationTtlSeconds;
    const code = newCode();
    const token = newLinkToken();
    const expireTime = new Date(Date.now() + ttlSeconds * 1000);
    await contactVerificationStore.replace(tx, {
      id: randomUUID(),
      userId,
      channel: "email",
      address,
      codeMac: this.macs.code(address, code),
      linkMac: this.macs.link(token),
      maxAttempts: this.settings.codeMaxAttempts,
      expireTime,
    });
    await this.mailer.send(mailTemplates.verifyAddress(this.settings, address, { code, token, ttlSeconds }));
    return expireTime;
  }

  /**
   * For a sign-in refused because the address is not confirmed: mails a new
   * code and link unless one went to it within the resend interval. True if
   * one was sent. A mail the provider refuses is only logged: the sign-in's
   * answer is the same either way, and the open code stays as it was.
   */
  async resend(userId: string, address: string): Promise<boolean> {
    try {
      return await this.db.transaction(async (tx) => {
        // Parallel sign-ins queue here, so the second sees the first one's mail and sends none.
        await userStore.lock(tx, userId);
        const open = await contactVerificationStore.open(tx, userId, "email");
        if (open && open.address === address && open.age_ms < this.settings.verificationResendSeconds * 1000) return false;
        await this.open(tx, userId, address);
        return true;
      });
    } catch (error) {
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
      // The caller proved the address is theirs, so saying another account holds it tells them nothing new.
      const taken = proven;
      await this.db.transaction(async (tx) => {
        await contactVerificationStore.close(tx, taken.id);
        await audit(tx, origin, { event: "email.change", outcome: "denied", userId: taken.user_id, detail: { method, reason: "email_taken" } });
      });
      throw new ConnectError("this address belongs to another account", Code.AlreadyExists);
    }
    if (!proven) throw wrongSecret(byCode ? "code" : "token");
    return proven.address;
  }

  /** One try of a code for an address; the verification it proves, if right. Wrong tries are audited in `tx`. */
  private async tryCode(tx: Sql, address: string, code: string, origin: CallOrigin): Promise<VerificationRow | undefined> {
    const tries = await contactVerificationStore.tryEmailCode(tx, address, this.macs.code(address, code));
    const right = tries.find((one) => one.matched);
    if (right) return right;
    if (tries.length === 0) {
      await audit(tx, origin, { event: "email.verify", outcome: "failure", detail: { method: "code", reason: "no_open_verification" } });
    }
    for (const wrong of tries) {
      await audit(tx, origin, { event: "email.verify", outcome: "failure", userId: wrong.user_id, detail: { method: "code", ...wrongCodeDetail(wrong) } });
    }
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
