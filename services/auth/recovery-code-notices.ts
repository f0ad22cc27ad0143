import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import type { Background } from "../platform/background.js";
import type { Database } from "../platform/database.js";
import { userStore } from "../users/store.js";
import { MailDeliveryError, type Mailer } from "./mail.js";
import { mailTemplates, type MailSender } from "./mail-templates.js";

/**
 * Tells a user who is down to few recovery codes to make new ones: by mail
 * to a confirmed address, and in the audit log (their security history)
 * either way. Runs after the code's use has committed and off the call's
 * path: the sign-in or step-up neither waits for it nor fails with it.
 */
export class RecoveryCodeNotices {
  constructor(
    private readonly db: Database,
    private readonly mailer: Mailer,
    private readonly sender: MailSender,
    private readonly background: Background,
  ) {}

  /** Starts the notice and returns at once (SecondFactors' FewRecoveryCodesNotice). */
  fewLeft(userId: string, remaining: number, origin: CallOrigin): void {
    // The call's context outlives the answer only as these three values.
    const { clientIp, userAgent, requestId } = origin;
    this.background.run("recovery-code notice", () => this.tell(userId, remaining, { clientIp, userAgent, requestId }));
  }

  private async tell(userId: string, remaining: number, origin: CallOrigin): Promise<void> {
    const user = await userStore.find(this.db, userId);
    if (!user) return;
    const notice = user.email && user.email_verify_time ? await this.mail(user.email, remaining) : "none";
    await audit(this.db, origin, { event: "mfa.recovery_codes_low", outcome: "success", userId, detail: { remaining, notice } });
  }

  /** Mails the notice; whether it went. */
  private async mail(to: string, remaining: number): Promise<"mailed" | "undelivered"> {
    try {
      await this.mailer.send(mailTemplates.fewRecoveryCodes(this.sender, to, remaining));
      return "mailed";
    } catch (error) {
      // The mailer has logged why; the audit row still tells of the notice that was due.
      if (!(error instanceof MailDeliveryError)) throw error;
      return "undelivered";
    }
  }
}
