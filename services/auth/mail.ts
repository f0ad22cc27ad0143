import nodemailer from "nodemailer";
import type SMTPTransport from "nodemailer/lib/smtp-transport/index.js";
import type { EmailConfig, EmailProviderName } from "../platform/config.js";
import type { Logger } from "../platform/logger.js";
import { isLoopbackHost } from "../platform/loopback.js";
import { postWithin, signatureHeaders } from "../platform/webhook.js";
import { maskEmail } from "./email.js";
import { instrumented } from "./provider-hand-over.js";

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

/**
 * Sends a notice whose failure only needs telling in the audit log: whether
 * it went. The mailer has logged why not; an error other than the provider's
 * refusal is thrown.
 */
export async function sendNotice(mailer: Mailer, mail: Mail): Promise<"mailed" | "undelivered"> {
  try {
    await mailer.send(mail);
    return "mailed";
  } catch (error) {
    if (!(error instanceof MailDeliveryError)) throw error;
    return "undelivered";
  }
}

export function createMailer(config: EmailConfig, logger: Logger): Mailer {
  return instrumented(configuredMailer(config, logger), "email", "mail");
}

function configuredMailer(config: EmailConfig, logger: Logger): Mailer {
  switch (config.provider) {
    case "console":
      logger.warn("EMAIL_PROVIDER=console: mails are printed to stdout, not sent; set EMAIL_PROVIDER for real delivery");
      return { name: "console", send: async (mail) => void process.stdout.write(`[mail to ${mail.to}] ${mail.subject}\n${mail.text}\n`) };
    case "webhook":
      return webhookMailer(config.webhook!, config.from, config.timeoutMs, logger);
    case "smtp":
      return smtpMailer(smtpTransportOptions(config.smtpUrl!, config.smtpCa, config.timeoutMs), config.from, logger);
  }
}

/** POSTs {from, to, subject, text, html} as JSON, signed as the SMS webhook is (see signatureHeaders). */
function webhookMailer(settings: NonNullable<EmailConfig["webhook"]>, from: string, timeoutMs: number, logger: Logger): Mailer {
  return {
    name: "webhook",
    async send(mail) {
      const body = JSON.stringify({ from, to: mail.to, subject: mail.subject, text: mail.text, html: mail.html });
      const headers = { "content-type": "application/json", ...signatureHeaders(body, settings.secret) };
      const sent = await postWithin(settings.url, { headers, body }, timeoutMs);
      if (!("response" in sent)) {
        const reason = sent.unreachable;
        logger.warn({ provider: "webhook", reason, to: maskEmail(mail.to) }, "mail not sent: provider unreachable");
        throw new MailDeliveryError("webhook", reason === "timeout" ? `no answer within ${timeoutMs} ms` : `provider unreachable (${reason})`);
      }
      await sent.response.body?.cancel();
      if (!sent.response.ok) {
        logger.warn({ provider: "webhook", status: sent.response.status, to: maskEmail(mail.to) }, "mail not sent: provider refused it");
        throw new MailDeliveryError("webhook", `provider answered HTTP ${sent.response.status}`);
      }
    },
  };
}

/**
 * How nodemailer reaches the server SMTP_URL names: smtps:// is TLS from the
 * start (port 465 unless given), smtp:// upgrades with STARTTLS (port 587
 * unless given). Each step (connecting, the greeting, every answer) may take
 * up to `timeoutMs`.
 */
export function smtpTransportOptions(url: string, ca: string | undefined, timeoutMs: number): SMTPTransport.Options {
  const parsed = new URL(url);
  const secure = parsed.protocol === "smtps:";
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  return {
    host,
    port: parsed.port ? Number(parsed.port) : secure ? 465 : 587,
    secure,
    // Off this machine, a server that does not offer STARTTLS (or someone in between who strips the offer) must not
    // get the password and the mail in clear; a relay on loopback may speak plain SMTP.
    requireTLS: !secure && !isLoopbackHost(host),
    auth: parsed.username ? { user: decodeURIComponent(parsed.username), pass: decodeURIComponent(parsed.password) } : undefined,
    tls: ca ? { ca } : undefined,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    dnsTimeout: timeoutMs,
    // Mails are built from our own strings: nothing in them may make nodemailer read a file or fetch a URL.
    disableFileAccess: true,
    disableUrlAccess: true,
    logger: false,
  };
}

/**
 * One connection per mail (no pool to keep open or close). A failure is
 * reported by its kind only: nodemailer's code (the socket's own, such as
 * ECONNREFUSED, when there is one) and the server's reply code, never its
 * message, which quotes the recipient.
 */
function smtpMailer(options: SMTPTransport.Options, from: string, logger: Logger): Mailer {
  const transport = nodemailer.createTransport(options);
  return {
    name: "smtp",
    async send(mail) {
      try {
        await transport.sendMail({
          from,
          to: mail.to,
          subject: mail.subject,
          text: mail.text,
          html: mail.html,
          // RFC 3834: out-of-office replies and the like are not sent back to a no-reply address.
          headers: { "auto-submitted": "auto-generated" },
        });
      } catch (error) {
        const { code, originalCode, responseCode } = error as { code?: unknown; originalCode?: unknown; responseCode?: unknown };
        const reason = [originalCode, code].find((c): c is string => typeof c === "string" && /^[A-Z][A-Z0-9_]*$/.test(c)) ?? "unknown";
        const smtpStatus = typeof responseCode === "number" ? responseCode : undefined;
        logger.warn({ provider: "smtp", reason, smtpStatus, to: maskEmail(mail.to) }, smtpStatus ? "mail not sent: server refused it" : "mail not sent: server unreachable");
        throw new MailDeliveryError("smtp", smtpStatus ? `server refused it (${reason}, SMTP ${smtpStatus})` : `server unreachable (${reason})`);
      }
    },
  };
}
