import { timingSafeEqual } from "node:crypto";
import type { CaptchaConfig, CaptchaProviderName } from "../platform/config.js";
import type { Logger } from "../platform/logger.js";
import { postWithin } from "../platform/webhook.js";

/** "unavailable" is the provider's fault, not the caller's: methods decide whether to let the call through. */
export type CaptchaVerdict = "passed" | "rejected" | "unavailable";

export interface CaptchaVerifier {
  readonly provider: Exclude<CaptchaProviderName, "none">;
  /** What a client needs to render the widget. */
  readonly siteKey: string;
  verify(token: string, remoteIp: string): Promise<CaptchaVerdict>;
}

/** Real tokens are a few hundred to about two thousand characters; anything far longer is not one, and is not sent on. */
const maxTokenLength = 4096;

/** The verifier CAPTCHA_PROVIDER names, or none: then no method asks for a token. */
export function createCaptchaVerifier(config: CaptchaConfig, logger: Logger): CaptchaVerifier | undefined {
  if (config.provider === "none") return undefined;
  const provider = config.provider;
  const accepts = answerCheck(config);
  const testToken = config.testToken === undefined ? undefined : Buffer.from(config.testToken);
  if (testToken) logger.warn({ provider }, "CAPTCHA_TEST_TOKEN is set: that token passes every captcha check; unset it outside tests");
  return {
    provider,
    siteKey: config.siteKey!,
    async verify(token, remoteIp) {
      if (token.length > maxTokenLength) return "rejected";
      if (testToken && testToken.length === Buffer.byteLength(token) && timingSafeEqual(testToken, Buffer.from(token))) return "passed";
      const form = new URLSearchParams({ secret: config.secret!, response: token, remoteip: remoteIp });
      const sent = await postWithin(config.verifyUrl!, { headers: { "content-type": "application/x-www-form-urlencoded" }, body: form.toString() }, config.timeoutMs);
      // Only the kind of failure: the form holds the secret and the token.
      if ("unreachable" in sent) {
        logger.warn({ provider, problem: sent.unreachable }, "captcha provider unreachable");
        return "unavailable";
      }
      if (!sent.response.ok) {
        await sent.response.body?.cancel();
        logger.warn({ provider, status: sent.response.status }, "captcha provider answered an error");
        return "unavailable";
      }
      const answer: unknown = await sent.response.json().catch(() => undefined);
      if (typeof answer !== "object" || answer === null || typeof (answer as { success?: unknown }).success !== "boolean") {
        logger.warn({ provider }, "captcha provider's answer is unreadable");
        return "unavailable";
      }
      return accepts(answer as SiteverifyAnswer) ? "passed" : "rejected";
    },
  };
}

/** The fields of a siteverify answer we read; every provider sends `success`, reCAPTCHA v3 adds `score` and `action`. */
interface SiteverifyAnswer {
  success: boolean;
  score?: unknown;
  action?: unknown;
}

function answerCheck(config: CaptchaConfig): (answer: SiteverifyAnswer) => boolean {
  if (config.provider !== "recaptcha") return (answer) => answer.success;
  // A v2 answer has no score: it is refused, since the threshold could not be applied.
  return (answer) =>
    answer.success &&
    typeof answer.score === "number" &&
    answer.score >= config.minScore &&
    (config.expectedAction === undefined || answer.action === config.expectedAction);
}
