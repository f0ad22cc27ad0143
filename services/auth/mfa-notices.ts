import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import type { Background } from "../platform/background.js";
import type { Database } from "../platform/database.js";
import { userStore } from "../users/store.js";
import { sendNotice, type Mail, type Mailer } from "./mail.js";
import { mailTemplates, type MailSender } from "./mail-templates.js";
import type { FactorNotices } from "./second-factors.js";

/**
 * Mails the owner about their second factor: TOTP turned on or off, the
 * failure budget spent (someone may be guessing codes), few recovery codes
 * left. Only to a confirmed address, after the change committed and off the
 * call's path: the call neither waits for the mail nor fails with it (the
 * mailer logs a failure; the change itself is in the audit log either way).
 */
export class MfaNotices implements FactorNotices {
  constructor(
    private readonly db: Database,
    private readonly mailer: Mailer,
    private readonly sender: MailSender,
    private readonly background: Background,
  ) {}

  totpTurnedOn(userId: string): void {
    this.mail("totp-on notice", userId, (to) => mailTemplates.totpTurnedOn(this.sender, to));
  }

  totpTurnedOff(userId: string): void {
    this.mail("totp-off notice", userId, (to) => mailTemplates.totpTurnedOff(this.sender, to));
  }

  passkeyAdded(userId: string): void {
    this.mail("passkey notice", userId, (to) => mailTemplates.passkeyAdded(this.sender, to));
  }

  passkeyRemoved(userId: string): void {
    this.mail("passkey notice", userId, (to) => mailTemplates.passkeyRemoved(this.sender, to));
  }

  budgetExhausted(userId: string, lockSeconds: number): void {
    this.mail("mfa lockout notice", userId, (to) => mailTemplates.mfaCodesRefused(this.sender, to, lockSeconds));
  }

  /** Few recovery codes left: also audited, as it shows in the user's security history whether or not a mail could go. */
  fewLeft(userId: string, remaining: number, origin: CallOrigin): void {
    // The call's context outlives the answer only as these three values.
    const { clientIp, userAgent, requestId } = origin;
    this.background.run("recovery-code notice", async () => {
      const user = await userStore.find(this.db, userId);
      if (!user) return;
      const notice = user.email && user.email_verify_time ? await sendNotice(this.mailer, mailTemplates.fewRecoveryCodes(this.sender, user.email, remaining)) : "none";
      await audit(this.db, { clientIp, userAgent, requestId }, { event: "mfa.recovery_codes_low", outcome: "success", userId, detail: { remaining, notice } });
    });
  }

  private mail(task: string, userId: string, compose: (to: string) => Mail): void {
    this.background.run(task, async () => {
      const user = await userStore.find(this.db, userId);
      if (user?.email && user.email_verify_time) await this.mailer.send(compose(user.email));
    });
  }
}
