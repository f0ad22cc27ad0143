import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { Code, ConnectError, invalidArgument } from "../kernel/errors.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import { isUniqueViolation } from "../platform/database-errors.js";
import { userStore } from "../users/store.js";
import { userMessage } from "../users/user.js";
import type {
  ChangeEmailResponseSchema,
  ChangePhoneNumberResponseSchema,
  VerifyPhoneNumberResponseSchema,
} from "../../gen/portcullis/v1/auth_service_pb.js";
import { contactVerificationStore, type CodeTry } from "./contact-verification-store.js";
import type { ChangeProofs } from "./change-proof.js";
import { openVerification, refuseTakenAddress, withdrawVerification, type OpenedVerification } from "./contact-verifications.js";
import { sendOrUndo } from "./delivery.js";
import { emailProblem, maskEmail, normalizeEmail } from "./email.js";
import type { EmailVerifications } from "./email-verification.js";
import type { Mailer } from "./mail.js";
import { mailTemplates } from "./mail-templates.js";
import { codeLength, newCode, type SecretMacs } from "./one-time-secrets.js";
import { checkPhoneNumber, maskPhone } from "./phone.js";
import type { SmsProvider } from "./sms.js";
import type { SmsBudgets } from "./sms-budgets.js";
import { smsTexts } from "./sms-texts.js";
import { wrongCode, wrongCodeDetail } from "./wrong-code.js";

const gone = () => new ConnectError("this account no longer exists", Code.Unauthenticated);

/** Who an audit row of a change is about, and from which session. */
const actor = (principal: Principal) => ({ userId: principal.subject, sessionId: principal.sessionId });

/**
 * A signed-in user adding or changing the email address or phone number the
 * account is reached at. The new one counts only once a code sent to it comes
 * back (VerifyEmail, VerifyPhoneNumber); until then the old one stays in use.
 * Starting a change needs proof beyond a token: the current password, or for
 * an account without one a sign-in made minutes ago.
 */
export class ContactChanges {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["account"],
    private readonly allowedCountries: readonly string[],
    private readonly proofs: ChangeProofs,
    private readonly verifications: EmailVerifications,
    private readonly mailer: Mailer,
    private readonly sms: SmsProvider,
    private readonly budgets: SmsBudgets,
    private readonly macs: SecretMacs,
  ) {}

  /**
   * Mails a code and link to the new address and tells the old one. Whether
   * another account holds the new address is not said here: only VerifyEmail
   * says so, to someone who has proved the address is theirs.
   */
  async changeEmail(
    principal: Principal,
    request: { newEmail: string; currentPassword: string },
    origin: CallOrigin,
  ): Promise<MessageInitShape<typeof ChangeEmailResponseSchema>> {
    const email = normalizeEmail(request.newEmail);
    const problem = emailProblem(email);
    if (problem) throw invalidArgument([{ field: "new_email", description: problem }]);
    const event = "email.change_requested";
    await this.proofs.prove(principal, request.currentPassword, event, origin, { verifiedEmail: true });
    const { opened, previous } = await this.db.transaction(async (tx) => {
      const user = await userStore.lock(tx, principal.subject);
      if (!user) throw gone();
      if (user.email === email) {
        throw invalidArgument([{ field: "new_email", description: "this is already the account's address" }]);
      }
      await audit(tx, origin, { event, outcome: "success", ...actor(principal), detail: { added: user.email === null } });
      return { opened: await this.verifications.open(tx, user.id, email), previous: user.email };
    });
    // If either mail is refused, the code is taken back: a change the old address was not told of must not go ahead.
    const send = async () => {
      await this.mailer.send(opened.mail);
      if (previous) await this.mailer.send(mailTemplates.addressChangeStarted(this.settings, previous, maskEmail(email)));
    };
    await sendOrUndo(this.db, origin, send, { audit: { event, ...actor(principal) }, revert: (tx) => withdrawVerification(tx, opened) });
    return { verificationExpireTime: timestampFromDate(opened.expireTime) };
  }

  /** Texts a code to the new number. */
  async changePhoneNumber(
    principal: Principal,
    request: { phoneNumber: string; currentPassword: string },
    origin: CallOrigin,
  ): Promise<MessageInitShape<typeof ChangePhoneNumberResponseSchema>> {
    const phone = checkPhoneNumber(request.phoneNumber, this.allowedCountries);
    if (!phone.ok) throw invalidArgument([{ field: "phone_number", description: phone.problem }]);
    const event = "phone.change_requested";
    await this.proofs.prove(principal, request.currentPassword, event, origin, { verifiedEmail: true });
    const overBudget = await this.budgets.spend(phone, event, origin);
    if (overBudget) throw overBudget.error;
    const ttlSeconds = this.settings.verificationTtlSeconds;
    const code = newCode();
    const detail = { phone: maskPhone(phone.e164), country: phone.country };
    const opened = await this.db.transaction(async (tx): Promise<OpenedVerification> => {
      const user = await userStore.lock(tx, principal.subject);
      if (!user) throw gone();
      if (user.phone_number === phone.e164) {
        throw invalidArgument([{ field: "phone_number", description: "this is already the account's number" }]);
      }
      const opened = await openVerification(tx, this.settings, {
        userId: user.id,
        channel: "phone",
        address: phone.e164,
        codeMac: this.macs.code(phone.e164, code),
        linkMac: null,
      });
      await audit(tx, origin, { event, outcome: "success", ...actor(principal), detail });
      return opened;
    });
    const send = () => this.sms.send({ to: phone.e164, body: smsTexts.addNumberCode(this.settings.productName, code, ttlSeconds) });
    await sendOrUndo(this.db, origin, send, { audit: { event, ...actor(principal), detail }, revert: (tx) => withdrawVerification(tx, opened) });
    return { expireTime: timestampFromDate(opened.expireTime), codeLength };
  }

  /** The code texted by changePhoneNumber: the number becomes the account's. */
  async verifyPhoneNumber(principal: Principal, code: string, origin: CallOrigin): Promise<MessageInitShape<typeof VerifyPhoneNumberResponseSchema>> {
    const who = actor(principal);
    const open = await contactVerificationStore.open(this.db, who.userId, "phone");
    let tried: CodeTry | undefined;
    try {
      const user = await this.db.transaction(async (tx) => {
        // By id, with the HMAC for its number: a change to another number meanwhile has closed this one.
        tried = open && (await contactVerificationStore.tryCode(tx, open.id, this.macs.code(open.address, code), this.settings.codeFailureBudget));
        if (!tried?.matched) {
          const detail = tried ? wrongCodeDetail(tried) : { reason: "no_open_verification" };
          await audit(tx, origin, { event: "phone.change", outcome: "failure", ...who, detail });
          return undefined;
        }
        const changed = await userStore.setConfirmedPhone(tx, who.userId, tried.address);
        if (!changed) throw gone();
        await audit(tx, origin, { event: "phone.change", outcome: "success", ...who, detail: { phone: maskPhone(tried.address) } });
        return changed;
      });
      if (!user) throw wrongCode();
      return { user: userMessage(user) };
    } catch (error) {
      if (!isUniqueViolation(error) || !tried) throw error;
      const entry = { event: "phone.change", ...who, detail: { phone: maskPhone(tried.address), reason: "phone_taken" } };
      throw await refuseTakenAddress(this.db, origin, tried.id, entry, "this number belongs to another account");
    }
  }
}
