import { createHmac, randomInt, randomUUID, timingSafeEqual } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MikroORM } from "@mikro-orm/postgresql";
import { audit, type AuditOrigin } from "../platform/audit.js";
import type { Config } from "../platform/config.js";
import { invalidArgument, rateLimited, unavailable } from "../platform/errors.js";
import type { Logger } from "../platform/logger.js";
import { Violations } from "../platform/validation.js";
import type { RateLimiter } from "../policy/rate-limiter.js";
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

/** An open code, as counted by the attempt that just used it. */
interface Attempt {
  id: string;
  code_mac: Buffer;
  attempts: number;
  max_attempts: number;
}
const wrongCode = () => invalidArgument([{ field: "code", description: "the code is wrong or has expired; request a new one" }]);

/**
 * Sign-in by a one-time code sent by SMS. Codes are kept only as an HMAC;
 * attempts are counted in the same statement that fetches the code, before
 * any comparison, so parallel guesses cannot exceed the limit. Failures per
 * phone number are counted apart from codes, so a new code does not reset them.
 */
export class OtpSignIn {
  constructor(
    private readonly orm: MikroORM,
    private readonly settings: Config["otp"],
    private readonly sms: SmsProvider,
    private readonly limiter: RateLimiter,
    private readonly codeKey: Buffer,
    private readonly sessions: Sessions,
    private readonly tokens: AccessTokens,
    private readonly logger: Logger,
  ) {}

  async send(rawPhone: string, origin: AuditOrigin): Promise<MessageInitShape<typeof SendOtpResponseSchema>> {
    const phone = this.phone(rawPhone);
    const em = this.orm.em.fork();
    await this.refuseLockedPhone(phone.e164);
    const country = await this.limiter.consume(`otp_send_country:${phone.country}`, this.settings.countryHourlyBudget, 3_600_000);
    if (!country.allowed) {
      await audit(em, origin, { event: "otp.send", outcome: "denied", detail: { reason: "country_budget", country: phone.country } });
      throw rateLimited("otp_send_country", country.retryAfterMs);
    }

    const code = randomInt(0, 10 ** codeLength).toString().padStart(codeLength, "0");
    const id = randomUUID();
    const expireTime = new Date(Date.now() + this.settings.ttlSeconds * 1000);
    await em.transactional(async (tx) => {
      const [open] = await tx.execute<{ wait_ms: number }[]>(
        `select ceil(extract(epoch from create_time + make_interval(secs => ?) - now()) * 1000)::int as wait_ms
         from otp_challenge where phone_number = ? and close_time is null for update`,
        [this.settings.resendCooldownSeconds, phone.e164],
      );
      if (open && open.wait_ms > 0) throw rateLimited("otp_resend_cooldown", open.wait_ms);
      await tx.execute("update otp_challenge set close_time = now() where phone_number = ? and close_time is null", [phone.e164]);
      await tx.execute(
        "insert into otp_challenge (id, phone_number, code_mac, max_attempts, expire_time) values (?, ?, ?, ?, ?)",
        [id, phone.e164, this.mac(phone.e164, code), this.settings.maxAttempts, expireTime],
      );
    }).catch((error: unknown) => {
      // Two sends racing: the open-challenge index lets one through; the other waits its turn.
      if ((error as { code?: string }).code === "23505") throw rateLimited("otp_resend_cooldown", this.settings.resendCooldownSeconds * 1000);
      throw error;
    });

    try {
      await this.sms.send({ to: phone.e164, body: `Your Portcullis code is ${code}. It expires in ${Math.round(this.settings.ttlSeconds / 60)} minutes.` });
    } catch (error) {
      // The person did nothing wrong: drop the code so neither cooldown nor attempts are spent.
      await em.execute("delete from otp_challenge where id = ?", [id]);
      await audit(em, origin, { event: "otp.send", outcome: "failure", detail: { phone: maskPhone(phone.e164), reason: "sms_provider" } });
      if (error instanceof SmsDeliveryError) throw unavailable("the code could not be sent; try again shortly");
      throw error;
    }
    await audit(em, origin, { event: "otp.send", outcome: "success", detail: { phone: maskPhone(phone.e164), country: phone.country } });
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
    const em = this.orm.em.fork();
    // The budget check and the attempt are one statement: a locked number spends no attempt.
    const [state] = await em.execute<(FailureBudget & Partial<Attempt>)[]>(
      `with ${this.failureBudgetSql},
       attempt as (
         update otp_challenge set attempts = attempts + 1
         where phone_number = ? and close_time is null and expire_time > now() and attempts < max_attempts
           and (select failures from budget) < ?
         returning id, code_mac, attempts, max_attempts)
       select budget.*, attempt.* from budget left join attempt on true`,
      [...this.failureBudgetParams(e164), e164, this.settings.failureBudget],
    );
    this.refuseSpentBudget(state!);
    const challenge = state!.id ? (state as Attempt) : undefined;
    if (!challenge) {
      await audit(em, origin, { event: "otp.verify", outcome: "failure", detail: { phone: maskPhone(e164), reason: "no_open_code" } });
      throw wrongCode();
    }
    if (!timingSafeEqual(challenge.code_mac, this.mac(e164, code))) {
      await this.recordFailure(e164, challenge, origin);
      throw wrongCode();
    }

    const signedIn = await em.transactional(async (tx) => {
      const [closed] = await tx.execute("update otp_challenge set close_time = now() where id = ? and close_time is null returning id", [challenge.id]);
      if (!closed) return undefined;
      const [user] = await tx.execute<(UserRow & { inserted: boolean })[]>(
        `insert into app_user (id, phone_number, phone_verify_time) values (?, ?, now())
         on conflict (phone_number) do update set phone_verify_time = coalesce(app_user.phone_verify_time, now())
         returning ${userColumns}, (xmax = 0) as inserted`,
        [randomUUID(), e164],
      );
      if (user!.disable_time) return { user: user!, disabled: true as const };
      // The upsert holds the user's row lock that create() relies on.
      const created = await this.sessions.create(tx, user!.id, deviceInput, SignInMethod.OTP, origin, {
        name: "sign_in",
        detail: { method: "otp", new_user: user!.inserted },
      });
      return { user: user!, disabled: false as const, ...created };
    });
    if (!signedIn) throw wrongCode();
    if (signedIn.disabled) {
      await audit(em, origin, { event: "sign_in", outcome: "denied", userId: signedIn.user.id, detail: { reason: "account_disabled" } });
      throw wrongCode();
    }
    await this.sessions.published(signedIn.evicted);
    return {
      tokens: await issueTokenPair(this.tokens, claimsOf(signedIn.user), signedIn.session, signedIn.refreshToken),
      user: userMessage(signedIn.user),
      newUser: signedIn.user.inserted,
      sessionId: signedIn.session.id,
    };
  }

  private phone(raw: string) {
    const phone = checkPhoneNumber(raw, this.settings.allowedCountries);
    if (!phone.ok) throw invalidArgument([{ field: "phone_number", description: phone.problem }]);
    return phone;
  }

  private mac(phone: string, code: string): Buffer {
    return createHmac("sha256", this.codeKey).update(`${phone}:${code}`).digest();
  }

  /** Wrong codes for a number inside the window, and when the oldest of them leaves it. */
  private readonly failureBudgetSql = `
    recent as (
      select fail_time from otp_failure where phone_number = ? and fail_time > now() - make_interval(secs => ?)
      order by fail_time desc limit ?),
    budget as (
      select count(*)::int as failures,
             ceil(extract(epoch from min(fail_time) + make_interval(secs => ?) - now()) * 1000)::int as wait_ms
      from recent)`;

  private failureBudgetParams(phone: string) {
    const { failureWindowSeconds, failureBudget } = this.settings;
    return [phone, failureWindowSeconds, failureBudget, failureWindowSeconds];
  }

  /** A phone number that spent its failure budget gets no codes and no checks until the window moves on. */
  private async refuseLockedPhone(phone: string): Promise<void> {
    const [state] = await this.orm.em.fork().execute<FailureBudget[]>(`with ${this.failureBudgetSql} select * from budget`, this.failureBudgetParams(phone));
    this.refuseSpentBudget(state!);
  }

  private refuseSpentBudget(state: FailureBudget): void {
    if (state.failures >= this.settings.failureBudget) throw rateLimited("otp_failure_budget", state.wait_ms ?? 1000);
  }

  private async recordFailure(phone: string, challenge: Attempt, origin: AuditOrigin) {
    await this.orm.em.fork().transactional(async (tx) => {
      await tx.execute("insert into otp_failure (phone_number) values (?)", [phone]);
      if (challenge.attempts >= challenge.max_attempts) {
        await tx.execute("update otp_challenge set close_time = now() where id = ?", [challenge.id]);
      }
      const [{ failures }] = (await tx.execute<{ failures: number }[]>(
        "select count(*)::int as failures from otp_failure where phone_number = ? and fail_time > now() - make_interval(secs => ?)",
        [phone, this.settings.failureWindowSeconds],
      )) as [{ failures: number }];
      await audit(tx, origin, {
        event: "otp.verify",
        outcome: "failure",
        detail: { phone: maskPhone(phone), attempt: challenge.attempts, failures_in_window: failures },
      });
      if (failures === this.settings.failureBudget) {
        await audit(tx, origin, { event: "otp.phone_locked", outcome: "denied", detail: { phone: maskPhone(phone) } });
        this.logger.warn({ phone: maskPhone(phone) }, "phone number locked after repeated wrong codes");
      }
    });
  }
}
