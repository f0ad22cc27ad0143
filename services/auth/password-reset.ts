import { randomUUID } from "node:crypto";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Violations } from "../kernel/validation.js";
import type { Config } from "../platform/config.js";
import type { Background } from "../platform/background.js";
import type { Database } from "../platform/database.js";
import type { Sessions } from "../session/sessions.js";
import { userStore } from "../users/store.js";
import { contactVerificationStore } from "./contact-verification-store.js";
import { emailProblem, maskEmail, normalizeEmail } from "./email.js";
import { MailDeliveryError, type Mailer } from "./mail.js";
import { mfaStore } from "./mfa-store.js";
import { mailTemplates } from "./mail-templates.js";
import { newCode, newLinkToken, type SecretMacs } from "./one-time-secrets.js";
import { hashPassword, passwordProblem } from "./password.js";
import { passwordResetStore } from "./store.js";
import { wrongCode } from "./wrong-code.js";

/** ResetPassword's request: `email` with `code`, or `token` alone. */
export interface ResetRequest {
  email: string;
  code: string;
  token: string;
  newPassword: string;
}

type Via = "code" | "link";

/** A reset that may be used: which one, and whose. */
interface Usable {
  resetId: string;
  userId: string;
  email: string;
}

const refused = (via: Via) => wrongCode(via === "code" ? "code" : "token");

/**
 * A forgotten password, reset with a code or link mailed to the account's
 * address. RequestPasswordReset answers alike for every address; only the
 * audit log tells them apart. A reset sets the password, ends every lock and
 * session, confirms the address (the mail reached it) and closes the user's
 * other resets, in one transaction.
 */
export class PasswordResets {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["account"],
    private readonly sessions: Sessions,
    private readonly mailer: Mailer,
    private readonly macs: SecretMacs,
    private readonly background: Background,
  ) {}

  /**
   * Mails a code and a link if the address has an enabled account, in place
   * of the user's open reset: one open reset, one code to guess at. The mail
   * goes out after the answer: waiting for it, or answering UNAVAILABLE when
   * the provider refuses it, would tell the caller that the address has an
   * account. A reset whose mail was refused is removed, and the one it
   * replaced works again.
   */
  async request(rawEmail: string, origin: CallOrigin): Promise<void> {
    const email = normalizeEmail(rawEmail);
    new Violations().add("email", emailProblem(email)).throwIfAny();

    const user = await userStore.findByEmail(this.db, email);
    if (!user || user.disable_time) {
      const detail: Record<string, string> = user ? { reason: "account_disabled" } : { reason: "unknown_email", email: maskEmail(email) };
      await audit(this.db, origin, { event: "password.reset_requested", outcome: "denied", userId: user?.id, detail });
      return;
    }
    const secret = { code: newCode(), token: newLinkToken(), ttlSeconds: this.settings.passwordResetTtlSeconds };
    const id = randomUUID();
    const replaced = await this.db.transaction(async (tx) => {
      // Requests made together queue here, so one reset stays open.
      await userStore.lock(tx, user.id);
      const replaced = await passwordResetStore.replace(tx, {
        id,
        userId: user.id,
        codeMac: this.macs.code(user.id, secret.code),
        linkMac: this.macs.link(secret.token),
        maxAttempts: this.settings.codeMaxAttempts,
        failureBudget: this.settings.codeFailureBudget,
        expireTime: new Date(Date.now() + secret.ttlSeconds * 1000),
      });
      await audit(tx, origin, { event: "password.reset_requested", outcome: "success", userId: user.id });
      return replaced;
    });
    const { clientIp, userAgent, requestId } = origin;
    this.background.run("password-reset mail", async () => {
      try {
        await this.mailer.send(mailTemplates.passwordReset(this.settings, email, secret));
      } catch (error) {
        // Nobody received the secrets: a reset nobody can use must not linger.
        await this.db.transaction(async (tx) => {
          await userStore.lock(tx, user.id);
          await passwordResetStore.withdraw(tx, id, replaced);
          const detail = { reason: error instanceof MailDeliveryError ? "mail_undelivered" : "mail_failed" };
          await audit(tx, { clientIp, userAgent, requestId }, { event: "password.reset_requested", outcome: "failure", userId: user.id, detail });
        });
      }
    });
  }

  /** Sets the new password and signs out every session; returns how many. */
  async reset(request: ResetRequest, origin: CallOrigin): Promise<number> {
    const via: Via = request.token ? "link" : "code";
    const usable = via === "link" ? await this.byLink(request, origin) : await this.byCode(request, origin);
    const passwordHash = await hashPassword(request.newPassword);

    let lost = false;
    let unlocked = false;
    let factorRemoved = false;
    const revoked = await this.sessions
      .end({
        which: { userId: usable.userId },
        reason: "password_reset",
        origin,
        cause: async (tx) => {
          // Another use of the same reset won, or it expired or the account was disabled since it was checked.
          lost = (await passwordResetStore.consume(tx, usable.resetId)) === undefined;
          if (lost) throw refused(via);
          await userStore.setPassword(tx, usable.userId, passwordHash);
          unlocked = await userStore.clearLockouts(tx, usable.userId);
          // A second factor set up before anyone proved owning the address (EMAIL_VERIFICATION=optional) may be
          // whoever registered it, not its owner, who proves it only now: it must not lock the owner out.
          if (await userStore.confirmEmail(tx, usable.userId)) factorRemoved = await mfaStore.remove(tx, usable.userId);
          await passwordResetStore.closeOpen(tx, usable.userId);
          await contactVerificationStore.closeAllOf(tx, usable.userId);
        },
        audit: (ids) => [{ event: "password.reset", outcome: "success", userId: usable.userId, detail: { via, revoked_sessions: ids.length, unlocked, second_factor_removed: factorRemoved } }],
      })
      .catch(async (error: unknown) => {
        if (lost) await this.audited(origin, via, usable.userId, "used_or_expired");
        throw error;
      });

    // After the answer, like the other notices: the password has changed whatever the mail does, and a slow
    // provider must not hold the caller (an error would invite a retry that the closed reset must refuse).
    const changedAt = new Date();
    this.background.run("password-changed notice", () => this.mailer.send(mailTemplates.passwordChanged(this.settings, usable.email, changedAt)));
    return revoked.length;
  }

  private async byLink(request: ResetRequest, origin: CallOrigin): Promise<Usable> {
    const reset = await passwordResetStore.openByLink(this.db, this.macs.link(request.token));
    const user = reset && (await userStore.find(this.db, reset.user_id));
    if (!reset || !user?.email || user.disable_time) {
      await this.audited(origin, "link", user?.id, user?.disable_time ? "account_disabled" : "invalid_token");
      throw refused("link");
    }
    new Violations().add("new_password", passwordProblem(request.newPassword, user.email)).throwIfAny();
    return { resetId: reset.id, userId: user.id, email: user.email };
  }

  /**
   * The attempt counts before the password is hashed, so a wrong code for a
   * real account costs what one for an unknown address does.
   */
  private async byCode(request: ResetRequest, origin: CallOrigin): Promise<Usable> {
    const email = normalizeEmail(request.email);
    new Violations().add("email", emailProblem(email)).add("new_password", passwordProblem(request.newPassword, email)).throwIfAny();
    const user = await userStore.findByEmail(this.db, email);
    if (!user || user.disable_time) {
      await this.audited(origin, "code", user?.id, user ? "account_disabled" : "unknown_email");
      throw refused("code");
    }
    const attempt = await passwordResetStore.attemptCode(this.db, user.id, this.macs.code(user.id, request.code), this.settings.codeFailureBudget);
    if (!attempt?.matched) {
      // No attempt counted: no open reset, its code out of tries, or the user's wrong codes spent for today.
      await this.audited(origin, "code", user.id, attempt ? "wrong_code" : "no_open_code");
      throw refused("code");
    }
    return { resetId: attempt.id, userId: user.id, email };
  }

  private audited(origin: CallOrigin, via: Via, userId: string | undefined, reason: string): Promise<void> {
    return audit(this.db, origin, { event: "password.reset", outcome: "failure", userId, detail: { via, reason } });
  }
}
