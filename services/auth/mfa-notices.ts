import type { Background } from "../platform/background.js";
import type { Database } from "../platform/database.js";
import { userStore } from "../users/store.js";
import type { Mail, Mailer } from "./mail.js";
import { mailTemplates, type MailSender } from "./mail-templates.js";

/**
 * Mails the owner about their second factor: TOTP turned on or off, and the
 * failure budget spent (someone may be guessing codes). Only to a confirmed
 * address, after the change committed and off the call's path: the call
 * neither waits for the mail nor fails with it (the mailer logs a failure;
 * the change itself is in the audit log either way).
 */
export class MfaNotices {
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

  budgetExhausted(userId: string, lockSeconds: number): void {
    this.mail("mfa lockout notice", userId, (to) => mailTemplates.mfaCodesRefused(this.sender, to, lockSeconds));
  }

  private mail(task: string, userId: string, compose: (to: string) => Mail): void {
    this.background.run(task, async () => {
      const user = await userStore.find(this.db, userId);
      if (user?.email && user.email_verify_time) await this.mailer.send(compose(user.email));
    });
  }
}
