import type { CaptchaConfig } from "../platform/config.js";
import { IpRanges } from "../platform/ip-ranges.js";
import type { Logger } from "../platform/logger.js";
import { CaptchaRequirement } from "../../gen/portcullis/v1/policy_pb.js";
import { createCaptchaVerifier, type CaptchaVerdict, type CaptchaVerifier } from "./captcha.js";
import type { FailureCounter } from "./failure-counter.js";

/** The gate `config` asks for, counting failures in `failures`; none when its provider is "none". */
export function captchaGateFor(config: CaptchaConfig, failures: FailureCounter, logger: Logger): CaptchaGate | undefined {
  const verifier = createCaptchaVerifier(config, logger);
  return verifier && new CaptchaGate(verifier, config, failures, logger);
}

/**
 * Decides, for a method that declares `captcha`, whether a call may go on:
 * ALWAYS methods want a passing token on every call; AFTER_FAILURES methods
 * only once their recent failures (by IP or by identifier) reach the
 * threshold. A provider that cannot be asked fails ALWAYS closed, and
 * AFTER_FAILURES closed unless configured open.
 */
export class CaptchaGate {
  private readonly allowed: IpRanges;
  private readonly windowMs: number;

  constructor(
    readonly verifier: CaptchaVerifier,
    private readonly config: Pick<CaptchaConfig, "allowIps" | "failureThreshold" | "failureWindowSeconds" | "failOpenAfterFailures">,
    private readonly failures: FailureCounter,
    private readonly logger: Logger,
  ) {
    this.allowed = new IpRanges(config.allowIps);
    this.windowMs = config.failureWindowSeconds * 1000;
  }

  /** Whether a call from this IP to a method with this requirement is checked at all. */
  applies(requirement: CaptchaRequirement, clientIp: string): boolean {
    return requirement !== CaptchaRequirement.UNSPECIFIED && !this.allowed.includes(clientIp);
  }

  /**
   * "passed" lets the call on (also an AFTER_FAILURES call below the
   * threshold, or one failing open); "missing", "rejected" and "unavailable"
   * refuse it. `failureKeys` are what the method's failures are counted by.
   */
  async check(requirement: CaptchaRequirement, token: string | undefined, clientIp: string, failureKeys: readonly string[]): Promise<"missing" | CaptchaVerdict> {
    const always = requirement === CaptchaRequirement.ALWAYS;
    if (!always && !(await this.failedRecently(failureKeys))) return "passed";
    if (!token) return "missing";
    const verdict = await this.verifier.verify(token, clientIp);
    if (verdict === "unavailable" && !always && this.config.failOpenAfterFailures) {
      this.logger.warn({ provider: this.verifier.provider }, "captcha provider unavailable; letting the call through (CAPTCHA_FAIL_OPEN_AFTER_FAILURES)");
      return "passed";
    }
    return verdict;
  }

  /** Counts a failed call of an AFTER_FAILURES method; a store that is down loses the count, not the caller's answer. */
  async failed(failureKeys: readonly string[]): Promise<void> {
    try {
      await Promise.all(failureKeys.map((key) => this.failures.add(key, this.windowMs)));
    } catch (error) {
      this.logger.warn({ err: error }, "could not count a failed call for the captcha threshold");
    }
  }

  private async failedRecently(failureKeys: readonly string[]): Promise<boolean> {
    try {
      const counts = await Promise.all(failureKeys.map((key) => this.failures.count(key)));
      return counts.some((count) => count >= this.config.failureThreshold);
    } catch (error) {
      // Unknown is treated as over the threshold: a token is asked for rather than guessing a bot away.
      this.logger.warn({ err: error }, "could not read failed calls for the captcha threshold; asking for a token");
      return true;
    }
  }
}
