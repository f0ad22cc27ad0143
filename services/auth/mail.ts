import { createHmac } from "node:crypto";
import type { EmailConfig, EmailProviderName } from "../platform/config.js";
import type { Logger } from "../platform/logger.js";

/** One message, in plain text and HTML. */
export interface Mail {
  to: string;
  subject: string;
  text: string;
  html: string;
}

export interface Mailer {
  readonly name: EmailProviderName;
  send(mail: Mail): Promise<void>;
}

/**
 * Thrown when a mail could not be handed to the provider; callers answer
 * UNAVAILABLE and undo what the mail was for. Its message never holds the
 * mail's content (codes, links) nor credentials, so it is safe to log.
 */
export class MailDeliveryError extends Error {
  constructor(
    readonly provider: EmailProviderName,
    problem: string,
  ) {
    super(`${provider}: ${problem}`);
    this.name = "MailDeliveryError";
  }
}

export function createMailer(config: EmailConfig, logger: Logger): Mailer {
  switch (config.provider) {
    case "console":
      logger.warn("EMAIL_PROVIDER=console: mails are printed to stdout, not sent; set EMAIL_PROVIDER for real delivery");
      return { name: "console", send: async (mail) => void process.stdout.write(`[mail to ${mail.to}] ${mail.subject}\n${mail.text}\n`) };
    case "webhook":
      return webhookMailer(config.webhook!, config.from, config.timeoutMs, logger);
    case "smtp":
      throw new Error("EMAIL_PROVIDER=smtp is not built yet");
  }
}

/**
 * POSTs {from, to, subject, text, html} as JSON. Signed as the SMS webhook is:
 * HMAC-SHA256 over `${X-Portcullis-Timestamp}.${raw body}`, hex after
 * "sha256=" in X-Portcullis-Signature.
 */
function webhookMailer(settings: NonNullable<EmailConfig["webhook"]>, from: string, timeoutMs: number, logger: Logger): Mailer {
  return {
    name: "webhook",
    async send(mail) {
      const body = JSON.stringify({ from, to: mail.to, subject: mail.subject, text: mail.text, html: mail.html });
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (settings.secret) {
        const timestamp = String(Math.floor(Date.now() / 1000));
        headers["x-portcullis-timestamp"] = timestamp;
        headers["x-portcullis-signature"] = `sha256=${createHmac("sha256", settings.secret).update(`${timestamp}.${body}`).digest("hex")}`;
      }
      let response: Response;
      try {
        response = await fetch(settings.url, { method: "POST", headers, body, redirect: "manual", signal: AbortSignal.timeout(timeoutMs) });
      } catch (error) {
        const reason = (error as Error).name === "TimeoutError" ? "timeout" : ((error as Error).cause as { code?: string } | undefined)?.code ?? "network";
        logger.warn({ provider: "webhook", reason }, "mail not sent: provider unreachable");
        throw new MailDeliveryError("webhook", `provider unreachable (${reason})`);
      }
      await response.body?.cancel();
      if (!response.ok) {
        logger.warn({ provider: "webhook", status: response.status }, "mail not sent: provider refused it");
        throw new MailDeliveryError("webhook", `provider answered HTTP ${response.status}`);
      }
    },
  };
}
