import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Violations } from "../kernel/validation.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import { signIns } from "../platform/metrics.js";
import { userStore } from "../users/store.js";
import type { RegisterResponseSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { emailProblem, normalizeEmail } from "./email.js";
import { undeliverable, type EmailVerifications } from "./email-verification.js";
import { MailDeliveryError, type Mailer } from "./mail.js";
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
    let expireTime = new Date(Date.now() + this.settings.verificationTtlSeconds * 1000);
    let created = false;
    try {
      // The mail goes out inside the transaction: if the provider refuses it, no account or code stays behind.
      await this.db.transaction(async (tx) => {
        const user = await userStore.createWithEmail(tx, { id: randomUUID(), email, passwordHash, displayName: request.displayName });
        if (user) {
          await audit(tx, origin, { event: "register", outcome: "success", userId: user.id, detail: { method: "pwd" } });
          expireTime = await this.verifications.open(tx, user.id, email);
          created = true;
          return;
        }
        const owner = await userStore.findByEmail(tx, email);
        await audit(tx, origin, { event: "register", outcome: "denied", userId: owner?.id, detail: { method: "pwd", reason: "email_taken" } });
        await this.mailer.send(mailTemplates.registrationAttempt(this.settings, email));
      });
    } catch (error) {
      if (error instanceof MailDeliveryError) {
        await audit(this.db, origin, { event: "register", outcome: "failure", detail: { method: "pwd", reason: "mail_provider" } });
      }
      throw undeliverable(error);
    }
    signIns.labels("pwd", created ? "registered" : "email_taken").inc();
    return { verificationExpireTime: timestampFromDate(expireTime) };
  }
}
