import { createHmac, randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { invalidArgument, rateLimited, unavailable } from "../kernel/errors.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import { isUniqueViolation } from "../platform/database-errors.js";
import type { Logger } from "../platform/logger.js";
import { lockouts, otpSends, signIns } from "../platform/metrics.js";
import type { SignInAnswers } from "../session/sign-in-answers.js";
import type { DeviceInput, Sessions } from "../session/sessions.js";
import type { SendOtpResponseSchema, VerifyOtpResponseSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { MfaSignIn } from "./mfa-sign-in.js";
import { codeLength, newCode } from "./one-time-secrets.js";
import { checkPhoneNumber, maskPhone } from "./phone.js";
import type { SmsBudgets } from "./sms-budgets.js";
import { SmsDeliveryError, type SmsProvider } from "./sms.js";
import { smsTexts } from "./sms-texts.js";
import { CodeAttempts } from "./otp-attempts.js";
import { otpStore } from "./store.js";
import { wrongCode } from "./wrong-code.js";

/**
 * Sign-in by a one-time code sent by SMS. Codes are kept only as an HMAC;
 * attempts are counted in the statement that checks the code, under the
 * code's row lock, so parallel guesses cannot exceed the limit (CodeAttempts).
 * Failures per phone number are counted apart from codes, so a new code does
 * not reset them, and each code allows no more attempts than the budget has left.
 */
export class OtpSignIn {
  private readonly attempts: CodeAttempts;

  constructor(
    private readonly db: Database,
    private readonly settings: Config["otp"],
    private readonly sms: SmsProvider,
    private readonly budgets: SmsBudgets,
    private readonly codeKey: Buffer,
    sessions: Sessions,
    private readonly answers: SignInAnswers,
    private readonly logger: Logger,
    mfa: MfaSignIn,
  ) {
    this.attempts = new CodeAttempts(db, settings, sessions, mfa);
  }

  async send(rawPhone: string, origin: CallOrigin): Promise<MessageInitShape<typeof SendOtpResponseSchema>> {
    const phone = checkPhoneNumber(rawPhone, this.settings.allowedCountries);
    if (!phone.ok) throw invalidArgument([{ field: "phone_number", description: phone.problem }]);
    const refused = (outcome: string, error: Error) => {
      otpSends.labels(phone.country, outcome).inc();
      return error;
    };
    const code = newCode();
    const id = randomUUID();
    const expireTime = new Date(Date.now() + this.settings.ttlSeconds * 1000);
    await this.db
      .transaction(async (tx) => {
        // The open code's row lock orders this send after any attempt still running on it.
        const open = await otpStore.lockOpenCode(tx, phone.e164, this.settings.resendCooldownSeconds);
        if (open && open.wait_ms > 0) throw refused("cooldown", rateLimited("otp_resend_cooldown", open.wait_ms));
        const budget = await otpStore.failureBudget(tx, phone.e164, this.settings);
        if (budget.failures >= this.settings.failureBudget) throw refused("failure_budget", rateLimited("otp_failure_budget", budget.wait_ms ?? 1000));
        await otpStore.replaceCode(tx, {
          id,
          phone: phone.e164,
          codeMac: this.mac(phone.e164, code),
          maxAttempts: Math.min(this.settings.maxAttempts, this.settings.failureBudget - budget.failures),
          expireTime,
        });
      })
      .catch((error: unknown) => {
        // Two sends racing: the open-challenge index lets one through; the other waits its turn.
        if (isUniqueViolation(error)) {
          throw refused("cooldown", rateLimited("otp_resend_cooldown", this.settings.resendCooldownSeconds * 1000));
        }
        throw error;
      });

    // Checked once the code exists, so a send the cooldown refuses spends no budget.
    const overBudget = await this.budgets.spend(phone, "otp.send", origin).catch(async (error: unknown) => {
      await this.dropCode(id);
      throw error;
    });
    if (overBudget) {
      await this.dropCode(id);
      throw refused(overBudget.reason, overBudget.error);
    }

    try {
      await this.sms.send({ to: phone.e164, body: smsTexts.signInCode(code, this.settings.ttlSeconds) });
    } catch (error) {
      // The person did nothing wrong: drop the code so neither cooldown nor attempts are spent.
      await this.dropCode(id);
      await audit(this.db, origin, { event: "otp.send", outcome: "failure", detail: { phone: maskPhone(phone.e164), reason: "sms_provider" } });
      otpSends.labels(phone.country, "provider_failed").inc();
      if (error instanceof SmsDeliveryError) throw unavailable("the code could not be sent; try again shortly");
      throw error;
    }
    await audit(this.db, origin, { event: "otp.send", outcome: "success", detail: { phone: maskPhone(phone.e164), country: phone.country } });
    otpSends.labels(phone.country, "sent").inc();
    return {
      expireTime: timestampFromDate(expireTime),
      resendTime: timestampFromDate(new Date(Date.now() + this.settings.resendCooldownSeconds * 1000)),
      codeLength,
    };
  }

  async verify(rawPhone: string, code: string, device: DeviceInput, origin: CallOrigin): Promise<MessageInitShape<typeof VerifyOtpResponseSchema>> {
    const phone = checkPhoneNumber(rawPhone, this.settings.allowedCountries);
    if (!phone.ok) throw invalidArgument([{ field: "phone_number", description: phone.problem }]);
    const e164 = phone.e164;

    const outcome = await this.attempts.check({ phone: e164, codeMac: this.mac(e164, code), device, origin });
    switch (outcome.kind) {
      case "no_code":
        if (outcome.budget.failures >= this.settings.failureBudget) {
          signIns.labels("otp", "locked").inc();
          throw rateLimited("otp_failure_budget", outcome.budget.wait_ms ?? 1000);
        }
        signIns.labels("otp", "no_code").inc();
        await audit(this.db, origin, { event: "otp.verify", outcome: "failure", detail: { phone: maskPhone(e164), reason: "no_open_code" } });
        throw wrongCode();
      case "wrong":
        signIns.labels("otp", "wrong_secret").inc();
        if (outcome.locked) {
          lockouts.labels("otp_phone").inc();
          this.logger.warn({ phone: maskPhone(e164) }, "phone number locked after repeated wrong codes");
        }
        throw wrongCode();
      case "disabled":
        signIns.labels("otp", "disabled").inc();
        await audit(this.db, origin, { event: "sign_in", outcome: "denied", userId: outcome.user.id, detail: { reason: "account_disabled" } });
        throw wrongCode();
      case "mfa_required":
        signIns.labels("otp", "mfa_required").inc();
        return { mfaChallenge: outcome.challenge };
      case "signed_in":
        return {
          ...(await this.answers.signedIn({ user: outcome.user, created: outcome, device, method: "otp" }, origin)),
          newUser: outcome.user.inserted,
        };
    }
  }

  private mac(phone: string, code: string): Buffer {
    return createHmac("sha256", this.codeKey).update(`${phone}:${code}`).digest();
  }

  private dropCode(id: string): Promise<void> {
    return otpStore.dropCode(this.db, id);
  }
}
