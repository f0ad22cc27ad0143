import type { SmsConfig, SmsProviderName } from "../platform/config.js";
import type { Logger } from "../platform/logger.js";
import { postWithin, signatureHeaders } from "../platform/webhook.js";
import { maskPhone } from "./phone.js";
import { instrumented } from "./provider-hand-over.js";

export interface SmsMessage {
  /** E.164, e.g. "+447700900123". */
  to: string;
  body: string;
}

export interface SmsProvider {
  readonly name: SmsProviderName;
  send(message: SmsMessage): Promise<void>;
}

/**
 * Thrown when a message could not be handed to the provider; callers answer
 * UNAVAILABLE. Its message never holds the body (it carries a one-time code)
 * nor credentials, so it is safe to log.
 */
export class SmsDeliveryError extends Error {
  readonly provider: SmsProviderName;
  readonly status?: number;
  /** The provider's own error code, e.g. Twilio's 21211 for an invalid "To" number. */
  readonly providerCode?: number;

  constructor(provider: SmsProviderName, problem: string, details: { status?: number; providerCode?: number } = {}) {
    super(`${provider}: ${problem}`);
    this.name = "SmsDeliveryError";
    this.provider = provider;
    this.status = details.status;
    this.providerCode = details.providerCode;
  }
}

export function createSmsProvider(config: SmsConfig, logger: Logger): SmsProvider {
  return instrumented(configuredProvider(config, logger), "sms", "sms");
}

function configuredProvider(config: SmsConfig, logger: Logger): SmsProvider {
  switch (config.provider) {
    case "console":
      logger.warn("SMS_PROVIDER=console: codes are printed to stdout, not sent; set SMS_PROVIDER for real delivery");
      return { name: "console", send: async ({ to, body }) => void process.stdout.write(`[sms to ${to}] ${body}\n`) };
    case "webhook":
      return webhookProvider(config.webhook!, config.timeoutMs, logger);
    case "twilio":
      return twilioProvider(config.twilio!, config.timeoutMs, logger);
  }
}

/** POSTs {to, body} as JSON, signed with the secret when one is set (see signatureHeaders). */
function webhookProvider(settings: NonNullable<SmsConfig["webhook"]>, timeoutMs: number, logger: Logger): SmsProvider {
  return {
    name: "webhook",
    async send(message) {
      const body = JSON.stringify({ to: message.to, body: message.body });
      const headers = { "content-type": "application/json", ...signatureHeaders(body, settings.secret) };
      const response = await post("webhook", message.to, settings.url, { headers, body }, timeoutMs, logger);
      await response.body?.cancel();
      if (!response.ok) throw failed("webhook", message.to, response.status, logger);
    },
  };
}

/** Twilio's Messages API: https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource */
function twilioProvider(settings: NonNullable<SmsConfig["twilio"]>, timeoutMs: number, logger: Logger): SmsProvider {
  const url = `${settings.baseUrl}/2010-04-01/Accounts/${encodeURIComponent(settings.accountSid)}/Messages.json`;
  const authorization = `Basic ${Buffer.from(`${settings.accountSid}:${settings.authToken}`).toString("base64")}`;
  return {
    name: "twilio",
    async send(message) {
      const form = new URLSearchParams({ To: message.to, Body: message.body });
      // A messaging service picks the sender itself; it wins when both are set, as in Twilio's own API.
      if (settings.messagingServiceSid) form.set("MessagingServiceSid", settings.messagingServiceSid);
      else form.set("From", settings.from!);
      const response = await post(
        "twilio",
        message.to,
        url,
        { headers: { authorization, "content-type": "application/x-www-form-urlencoded" }, body: form.toString() },
        timeoutMs,
        logger,
      );
      if (response.status === 200 || response.status === 201) {
        // The answer echoes the body (and so the code): drop it unread.
        await response.body?.cancel();
        return;
      }
      // Only the numeric code: Twilio's "message" may quote the number or what we sent.
      const answer: unknown = await response.json().catch(() => undefined);
      const code = (answer as { code?: unknown } | undefined)?.code;
      throw failed("twilio", message.to, response.status, logger, typeof code === "number" ? code : undefined);
    },
  };
}

async function post(
  provider: SmsProviderName,
  to: string,
  url: string,
  init: { headers: Record<string, string>; body: string },
  timeoutMs: number,
  logger: Logger,
): Promise<Response> {
  const sent = await postWithin(url, init, timeoutMs);
  if ("response" in sent) return sent.response;
  const reason = sent.unreachable;
  logger.warn({ provider, reason, phone: maskPhone(to) }, "SMS not sent: provider unreachable");
  throw new SmsDeliveryError(provider, reason === "timeout" ? `no answer within ${timeoutMs} ms` : `provider unreachable (${reason})`);
}

function failed(provider: SmsProviderName, to: string, status: number, logger: Logger, providerCode?: number): SmsDeliveryError {
  logger.warn({ provider, status, providerCode, phone: maskPhone(to) }, "SMS not sent: provider refused it");
  return new SmsDeliveryError(provider, `provider answered HTTP ${status}${providerCode === undefined ? "" : ` (error ${providerCode})`}`, {
    status,
    providerCode,
  });
}
