import { createHmac, randomInt, randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit, type AuditOrigin } from "../platform/audit.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import { invalidArgument, rateLimited, unavailable } from "../platform/errors.js";
import type { Logger } from "../platform/logger.js";
import { Violations } from "../platform/validation.js";
import { consumeRule, type RateLimiter } from "../policy/rate-limiter.js";
import type { Sessions } from "../session/sessions.js";
import type { AccessTokens } from "../tokens/access-token.js";
import { issueTokenPair } from "../tokens/token-issuer.js";
import { SignInMethod, type Device } from "../../gen/portcullis/v1/common_pb.js";
import type { SendOtpResponseSchema, VerifyOtpResponseSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { checkPhoneNumber, maskPhone } from "./phone.js";
import { SmsDeliveryError, type SmsProvider } from "./sms.js";
import { checkDevice, claimsOf, userColumns, userMessage, type UserRow } from "./users.js";

const codeLength = 6;

interface FailureBudget {
  failures: number;
  wait_ms: number | null;
}

/** What one attempt at a code found: the budget, the attempt (if a code was open) and, for the right code, the user. */
type AttemptResult = FailureBudget &
  ({ attempts: null } | { attempts: number; matched: false } | ({ attempts: number; matched: true; inserted: boolean } & UserRow));

const wrongCode = () => invalidArgument([{ field: "code", description: "the code is wrong or has expired; request a new one" }]);

/** Wrong codes for a number inside the window ($1 phone, $2 window seconds, $3 budget), and when the oldest of them leaves it. */
const failureBudgetSql = `
  recent as (
    select fail_time from otp_failure where phone_number = $1 and fail_time > now() - make_interval(secs => $2)
    order by fail_time desc limit $3),
  budget as (
    select count(*)::int as failures,
           ceil(extract(epoch from min(fail_time) + make_interval(secs => $2) - now()) * 1000)::int as wait_ms
    from recent)`;

/**
 * Sign-in by a one-time code sent by SMS. Codes are kept only as an HMAC;
 * attempts are counted in the same statement that checks the code, under the
 * code's row lock, so parallel guesses cannot exceed the limit. Failures per
 * phone number are counted apart from codes, so a new code does not reset
 * them, and each code allows no more attempts than the budget has left.
 */
export class OtpSignIn {
  private readonly countryRule: { limit: number; periodSeconds: number; failOpen: false };

  constructor(
    private readonly db: Database,
    private readonly settings: Config["otp"],
    private readonly sms: SmsProvider,
    private readonly limiter: RateLimiter,
    private readonly codeKey: Buffer,
    private readonly sessions: Sessions,
    private readonly tokens: AccessTokens,
    private readonly logger: Logger,
  ) {
    this.countryRule = { limit: settings.countryHourlyBudget, periodSeconds: 3600, failOpen: false };
  }

  async send(rawPhone: string, origin: AuditOrigin): Promise<MessageInitShape<typeof SendOtpResponseSchema>> {
    const phone = checkPhoneNumber(rawPhone, this.settings.allowedCountries);
    if (!phone.ok) throw invalidArgument([{ field: "phone_number", description: phone.problem }]);
    const code = randomInt(0, 10 ** codeLength).toString().padStart(codeLength, "0");
    const id = randomUUID();
    const expireTime = new Date(Date.now() + this.settings.ttlSeconds * 1000);
    await this.db
      .transaction(async (tx) => {
        // The open code's row lock orders this send after any attempt still running on it.
        const [open] = await tx.query<{ wait_ms: number }>(
          `select ceil(extract(epoch from create_time + make_interval(secs => $1) - now()) * 1000)::int as wait_ms
           from otp_challenge where phone_number = $2 and close_time is null for update`,
          [this.settings.resendCooldownSeconds, phone.e164],
        );
        if (open && open.wait_ms > 0) throw rateLimited("otp_resend_cooldown", open.wait_ms);
        const budget = await this.failureBudget(tx, phone.e164);
        if (budget.failures >= this.settings.failureBudget) throw rateLimited("otp_failure_budget", budget.wait_ms ?? 1000);
        await tx.query("update otp_challenge set close_time = now() where phone_number = $1 and close_time is null", [phone.e164]);
        await tx.query("insert into otp_challenge (id, phone_number, code_mac, max_attempts, expire_time) values ($1, $2, $3, $4, $5)", [
          id,
          phone.e164,
          this.mac(phone.e164, code),
          Math.min(this.settings.maxAttempts, this.settings.failureBudget - budget.failures),
          expireTime,
        ]);
      })
      .catch((error: unknown) => {
        // Two sends racing: the open-challenge index lets one through; the other waits its turn.
        if ((error as { code?: string }).code === "23505") throw rateLimited("otp_resend_cooldown", this.settings.resendCooldownSeconds * 1000);
        throw error;
      });

    // Checked once the code exists, so a send the cooldown refuses does not spend the country's budget.
    const country = await consumeRule(this.limiter, "otp_send_country", this.countryRule, phone.country, this.logger).catch(async (error: unknown) => {
      await this.dropCode(id);
      throw error;
    });
    if (!country.allowed) {
      await this.dropCode(id);
      await audit(this.db, origin, { event: "otp.send", outcome: "denied", detail: { reason: "country_budget", country: phone.country } });
      throw rateLimited("otp_send_country", country.retryAfterMs);
    }

    try {
      await this.sms.send({ to: phone.e164, body: `Your Portcullis code is ${code}. It expires in ${Math.round(this.settings.ttlSeconds / 60)} minutes.` });
    } catch (error) {
      // The person did nothing wrong: drop the code so neither cooldown nor attempts are spent.
      await this.dropCode(id);
      await audit(this.db, origin, { event: "otp.send", outcome: "failure", detail: { phone: maskPhone(phone.e164), reason: "sms_provider" } });
      if (error instanceof SmsDeliveryError) throw unavailable("the code could not be sent; try again shortly");
      throw error;
    }
    await audit(this.db, origin, { event: "otp.send", outcome: "success", detail: { phone: maskPhone(phone.e164), country: phone.country } });
    return {
      expireTime: timestampFromDate(expireTime),
      resendTime: timestampFromDate(new Date(Date.now() + this.settings.resendCooldownSeconds * 1000)),
      codeLength,
    };
  }

  async verify(rawPhone: string, code: string, device: Device | undefined, origin: AuditOrigin): Promise<MessageInitShape<typeof VerifyOtpResponseSchema>> {
    const violations = new Violations();
    const phone = checkPhoneNumber(rawPhone, this.settings.allowedCountries);
    violations.add("phone_number", phone.ok ? undefined : phone.problem);
    violations.add("code", /^\d{6}$/.test(code) ? undefined : "expected the 6 digits from the SMS");
    const deviceInput = checkDevice(device, violations);
    violations.throwIfAny();
    const e164 = (phone as { e164: string }).e164;

    // One transaction: the attempt is counted whatever happens next; a right code signs in with it.
    const outcome = await this.db.transaction(async (tx) => {
      const [attempt] = await tx.query<AttemptResult>(
        // The code is compared inside the counting statement: both sides are HMACs under a
        // server key, so the comparison's timing says nothing about the code.
        `with ${failureBudgetSql},
         attempt as (
           update otp_challenge set attempts = attempts + 1,
             close_time = case when code_mac = $5 or attempts + 1 >= max_attempts then now() end
           where phone_number = $1 and close_time is null and expire_time > now() and attempts < max_attempts
             and (select failures from budget) < $3
           returning attempts, code_mac = $5 as matched),
         signed_in as (
           insert into app_user (id, phone_number, phone_verify_time) select $4, $1, now() from attempt where matched
           on conflict (phone_number) do update set phone_verify_time = coalesce(app_user.phone_verify_time, now())
           returning ${userColumns}, (xmax = 0) as inserted)
         select budget.*, attempt.*, signed_in.* from budget left join attempt on true left join signed_in on true`,
        [e164, this.settings.failureWindowSeconds, this.settings.failureBudget, randomUUID(), this.mac(e164, code)],
      );
      if (attempt!.attempts === null) return { kind: "no_code" as const, budget: attempt! };
      if (!attempt!.matched) return { kind: "wrong" as const, ...(await this.recordFailure(tx, e164, attempt!.attempts, origin)) };
      const user = attempt!;
      if (user.disable_time) return { kind: "disabled" as const, user };
      // The upsert holds the user's row lock that create() relies on.
      const created = await this.sessions.create(tx, user.id, deviceInput, SignInMethod.OTP, origin, {
        name: "sign_in",
        detail: { method: "otp", new_user: user.inserted },
      });
      return { kind: "signed_in" as const, user, ...created };
    });

    switch (outcome.kind) {
      case "no_code":
        if (outcome.budget.failures >= this.settings.failureBudget) throw rateLimited("otp_failure_budget", outcome.budget.wait_ms ?? 1000);
        await audit(this.db, origin, { event: "otp.verify", outcome: "failure", detail: { phone: maskPhone(e164), reason: "no_open_code" } });
        throw wrongCode();
      case "wrong":
        if (outcome.locked) this.logger.warn({ phone: maskPhone(e164) }, "phone number locked after repeated wrong codes");
        throw wrongCode();
      case "disabled":
        await audit(this.db, origin, { event: "sign_in", outcome: "denied", userId: outcome.user.id, detail: { reason: "account_disabled" } });
        throw wrongCode();
      case "signed_in":
        await this.sessions.published(outcome.evicted);
        return {
          tokens: await issueTokenPair(this.tokens, claimsOf(outcome.user), outcome.session, outcome.refreshToken),
          user: userMessage(outcome.user),
          newUser: outcome.user.inserted,
          sessionId: outcome.session.id,
        };
    }
  }

  private mac(phone: string, code: string): Buffer {
    return createHmac("sha256", this.codeKey).update(`${phone}:${code}`).digest();
  }

  private async failureBudget(sql: Sql, phone: string): Promise<FailureBudget> {
    const [budget] = await sql.query<FailureBudget>(`with ${failureBudgetSql} select * from budget`, [
      phone,
      this.settings.failureWindowSeconds,
      this.settings.failureBudget,
    ]);
    return budget!;
  }

  private async dropCode(id: string): Promise<void> {
    await this.db.query("delete from otp_challenge where id = $1", [id]);
  }

  /** Counts a wrong code against the number's budget, in the attempt's transaction; says whether that spent the budget. */
  private async recordFailure(tx: Sql, phone: string, attempt: number, origin: AuditOrigin): Promise<{ locked: boolean }> {
    await tx.query("insert into otp_failure (phone_number) values ($1)", [phone]);
    const { failures } = await this.failureBudget(tx, phone);
    await audit(tx, origin, {
      event: "otp.verify",
      outcome: "failure",
      detail: { phone: maskPhone(phone), attempt, failures_in_window: failures },
    });
    const locked = failures === this.settings.failureBudget;
    if (locked) await audit(tx, origin, { event: "otp.phone_locked", outcome: "denied", detail: { phone: maskPhone(phone) } });
    return { locked };
  }
}
