import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { rateLimited, type ConnectError } from "../kernel/errors.js";
import type { Config, RateLimitRule } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import type { Logger } from "../platform/logger.js";
import { consumeRule, type RateLimiter } from "../policy/rate-limiter.js";
import { phonePrefix } from "./phone.js";

/** A text refused by a budget: the error to answer, and the reason metrics and the audit log give. */
export interface BudgetRefusal {
  reason: "prefix_budget" | "country_budget";
  error: ConnectError;
}

/**
 * Against SMS pumping: every text a caller can make us send (sign-in codes,
 * a new number's code) spends the hourly budget of the number's prefix and
 * of its country. The prefix first, so a pumped block of numbers, once
 * refused, stops spending its country's budget too.
 */
export class SmsBudgets {
  private readonly rules: { rule: string; limit: RateLimitRule; reason: BudgetRefusal["reason"] }[];

  constructor(
    private readonly db: Database,
    private readonly settings: Config["otp"],
    private readonly limiter: RateLimiter,
    private readonly logger: Logger,
  ) {
    const hourly = (limit: number): RateLimitRule => ({ limit, periodSeconds: 3600, failOpen: false });
    this.rules = [
      { rule: "otp_send_prefix", limit: hourly(settings.prefixHourlyBudget), reason: "prefix_budget" },
      { rule: "otp_send_country", limit: hourly(settings.countryHourlyBudget), reason: "country_budget" },
    ];
  }

  /**
   * Spends one text to `phone`; a refusal is audited as `event` denied and
   * returned. Throws UNAVAILABLE when the budgets cannot be checked (they fail closed).
   */
  async spend(phone: { e164: string; country: string }, event: string, origin: CallOrigin): Promise<BudgetRefusal | undefined> {
    const prefix = phonePrefix(phone.e164, this.settings.prefixDigits);
    for (const { rule, limit, reason } of this.rules) {
      const decision = await consumeRule(this.limiter, rule, limit, reason === "prefix_budget" ? prefix : phone.country, this.logger);
      if (decision.allowed) continue;
      const detail: Record<string, string> = reason === "prefix_budget" ? { reason, country: phone.country, prefix } : { reason, country: phone.country };
      await audit(this.db, origin, { event, outcome: "denied", detail });
      return { reason, error: rateLimited(rule, decision.retryAfterMs) };
    }
    return undefined;
  }
}
