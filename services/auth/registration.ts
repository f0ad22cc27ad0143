import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Violations } from "../kernel/validation.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import { signIns } from "../platform/metrics.js";
import { sessionStore } from "../session/store.js";
import { userStore } from "../users/store.js";
import type { RegisterResponseSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { contactVerificationStore } from "./contact-verification-store.js";
import { sendOrUndo } from "./delivery.js";
import { emailProblem, normalizeEmail } from "./email.js";
import type { EmailVerifications, OpenedEmailVerification } from "./email-verification.js";
import type { Mailer } from "./mail.js";
import { mailTemplates } from "./mail-templates.js";
import { hashPassword, passwordProblem } from "./password.js";

/**
 * Register: creates an account whose address must then be confirmed; it
 * never signs in. A taken address gets the same answer after the same work
 * (the password is hashed all the same), and its owner is mailed a notice
 * instead of a code, so Register does not tell who has an account. Two
 * registrations racing for one address make one account: the second waits on
 * the first's unique-index entry and finds the address taken.
 */
export class Registration {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["account"],
    private readonly verifications: EmailVerifications,
    private readonly mailer: Mailer,
  ) {}

  async register(request: { email: string; password: string; displayName: string }, origin: CallOrigin): Promise<MessageInitShape<typeof RegisterResponseSchema>> {
    const email = normalizeEmail(request.email);
    new Violations()
      .add("email", emailProblem(email))
      .add("password", passwordProblem(request.password, email))
      .throwIfAny();

    const passwordHash = await hashPassword(request.password);
    const expireTime = new Date(Date.now() + this.settings.verificationTtlSeconds * 1000);
    const opened = await this.db.transaction(async (tx) => {
      const user = await userStore.createWithEmail(tx, { id: randomUUID(), email, passwordHash, displayName: request.displayName });
      if (!user) {
        const owner = await userStore.findByEmail(tx, email);
        await audit(tx, origin, { event: "register", outcome: "denied", userId: owner?.id, detail: { method: "pwd", reason: "email_taken" } });
        return undefined;
      }
      await audit(tx, origin, { event: "register", outcome: "success", userId: user.id, detail: { method: "pwd" } });
      return this.verifications.open(tx, user.id, email);
    });
    const failed = { event: "register", detail: { method: "pwd" } };
    if (opened) {
      const undo = { audit: { ...failed, userId: opened.userId }, revert: (tx: Sql) => this.takeBack(tx, opened) };
      await sendOrUndo(this.db, origin, () => this.mailer.send(opened.mail), undo);
    } else {
      // Refused alike when it cannot be sent: answering otherwise would tell a taken address from a new one.
      await sendOrUndo(this.db, origin, () => this.mailer.send(mailTemplates.registrationAttempt(this.settings, email)), { audit: failed });
    }
    signIns.labels("pwd", opened ? "registered" : "email_taken").inc();
    return { verificationExpireTime: timestampFromDate(opened?.expireTime ?? expireTime) };
  }

  /**
   * An account whose confirmation mail was not sent goes, so that the address
   * can register again; one in use already (signed in meanwhile, with
   * EMAIL_VERIFICATION=optional) stays, and only its code goes.
   */
  private async takeBack(tx: Sql, opened: OpenedEmailVerification): Promise<void> {
    // Sign-ins take this row lock before they create a session: none begins while the account is looked at.
    await userStore.lock(tx, opened.userId);
    const signedIn = (await sessionStore.liveCounts(tx, [opened.userId])).size > 0;
    if (!signedIn && (await userStore.deleteUnconfirmed(tx, opened.userId))) return;
    // The row lock is held already: withdrawVerification would take it again.
    await contactVerificationStore.withdraw(tx, opened.id, opened.replaced);
  }
}
