import { execFile } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { simpleParser, type ParsedMail } from "mailparser";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import { createMailer, MailDeliveryError, smtpTransportOptions, type Mail } from "../../services/auth/mail.js";
import { mailTemplates } from "../../services/auth/mail-templates.js";
import { loadConfig } from "../../services/platform/config.js";
import { createLogger } from "../../services/platform/logger.js";
import { messageDeliveries } from "../../services/platform/metrics.js";

const code = "493817";
const mail: Mail = mailTemplates.verifyAddress({ productName: "Portcullis", appUrl: "https://app.example.com" }, "bob.smith@example.com", {
  code,
  token: "link-token-never-shown",
  ttlSeconds: 1800,
});
const from = "Portcullis <no-reply@example.com>";
const account = { user: "mailer", pass: "pa:ss/w@rd never shown" };
/** SMTP_URL with the account's credentials, percent-encoded as a URL carries them. */
const smtpUrl = (scheme: "smtp" | "smtps", port: number, pass = account.pass) =>
  `${scheme}://${account.user}:${encodeURIComponent(pass)}@127.0.0.1:${port}`;

interface Delivered {
  mail: ParsedMail;
  /** Whether the session was encrypted when the mail came: TLS from the start or after STARTTLS. */
  secure: boolean;
  user: unknown;
  recipients: string[];
}

/** A real SMTP server on loopback that requires AUTH (never in clear) and keeps what it receives, read back with mailparser. */
async function startSmtp(tls: { key: Buffer; cert: Buffer }, options: Partial<SMTPServerOptions> = {}) {
  const delivered: Delivered[] = [];
  const server = new SMTPServer({
    ...tls,
    logger: false,
    authMethods: ["PLAIN", "LOGIN"],
    onAuth(auth, _session, callback) {
      if (auth.username === account.user && auth.password === account.pass) return callback(null, { user: auth.username });
      callback(Object.assign(new Error("Invalid username or password"), { responseCode: 535 }));
    },
    onData(stream, session, callback) {
      simpleParser(stream).then(
        (parsed) => {
          delivered.push({ mail: parsed, secure: session.secure, user: session.user, recipients: session.envelope.rcptTo.map((r) => r.address) });
          callback();
        },
        (error: Error) => callback(error),
      );
    },
    ...options,
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.server.address() as AddressInfo).port;
  running.push(() => new Promise((resolve) => server.close(resolve)));
  return { port, delivered };
}

const running: (() => Promise<void>)[] = [];

/** Log lines of a mailer, as the platform's logger writes them. */
function capturingLogger() {
  const lines: string[] = [];
  return { lines, logger: createLogger("info", { write: (line: string) => void lines.push(line) }) };
}

/** The rejection of `promise`, which must be a MailDeliveryError that gives nothing of the mail or the credentials away. */
async function deliveryError(promise: Promise<void>): Promise<MailDeliveryError> {
  const error = await promise.then(
    () => expect.fail("the mail was reported sent"),
    (error: unknown) => error,
  );
  expect(error).to.be.instanceOf(MailDeliveryError);
  expectNothingSecretIn((error as Error).message);
  return error as MailDeliveryError;
}

function expectNothingSecretIn(text: string) {
  for (const secret of [code, "link-token-never-shown", mail.to, account.pass, encodeURIComponent(account.pass), mail.subject]) {
    expect(text).not.to.contain(secret);
  }
}

/** Samples of the delivery-time histogram for one provider and outcome. */
async function deliveriesTimed(provider: string, outcome: string): Promise<number> {
  const { values } = await messageDeliveries.get();
  const count = values.find(
    (v) => v.metricName === "portcullis_message_delivery_seconds_count" && v.labels.channel === "email" && v.labels.provider === provider && v.labels.outcome === outcome,
  );
  return count?.value ?? 0;
}

describe("Email delivery", () => {
  const silent = createLogger("silent");
  let folder: string;
  let tls: { key: Buffer; cert: Buffer };
  let caFile: string;

  before(async () => {
    // A certificate of our own for 127.0.0.1, trusted by the mailer through SMTP_CA_FILE only.
    folder = mkdtempSync(join(tmpdir(), "portcullis-smtp-"));
    const [keyFile, certFile] = [join(folder, "key.pem"), join(folder, "cert.pem")];
    await promisify(execFile)("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", keyFile, "-out", certFile,
    ]);
    tls = { key: readFileSync(keyFile), cert: readFileSync(certFile) };
    caFile = certFile;
  });

  afterEach(async () => {
    for (const stop of running.splice(0)) await stop();
  });

  after(() => rmSync(folder, { recursive: true, force: true }));

  describe("by SMTP", () => {
    const smtpMailer = (url: string, logger = silent, extra: Record<string, string> = {}) =>
      createMailer(loadConfig({ EMAIL_PROVIDER: "smtp", SMTP_URL: url, SMTP_CA_FILE: caFile, EMAIL_FROM: from, ...extra }).email, logger);

    it("upgrades smtp:// with STARTTLS, signs in with the URL's credentials and delivers the text and HTML from EMAIL_FROM", async () => {
      const { port, delivered } = await startSmtp(tls);
      const before = await deliveriesTimed("smtp", "ok");

      await smtpMailer(smtpUrl("smtp", port)).send(mail);

      expect(delivered).to.have.length(1);
      const [{ mail: received, secure, user, recipients }] = delivered as [Delivered];
      expect(secure, "encrypted before AUTH and the mail").to.equal(true);
      expect(user).to.equal(account.user);
      expect(recipients).to.deep.equal([mail.to]);
      expect(received.from?.value).to.deep.equal([{ address: "no-reply@example.com", name: "Portcullis" }]);
      expect(received.subject).to.equal(mail.subject);
      expect(received.text).to.equal(mail.text);
      expect(received.html).to.equal(mail.html);
      expect(received.headers.get("auto-submitted"), "no out-of-office replies to a no-reply address").to.equal("auto-generated");
      expect(await deliveriesTimed("smtp", "ok")).to.equal(before + 1);
    });

    it("speaks TLS from the start to smtps://", async () => {
      const { port, delivered } = await startSmtp(tls, { secure: true });
      await smtpMailer(smtpUrl("smtps", port)).send(mail);
      expect(delivered.map((d) => [d.secure, d.user, d.mail.subject])).to.deep.equal([[true, account.user, mail.subject]]);
    });

    it("gives up rather than send in clear when the server's certificate is not trusted", async () => {
      const { port, delivered } = await startSmtp(tls);
      const mailer = createMailer(loadConfig({ EMAIL_PROVIDER: "smtp", SMTP_URL: smtpUrl("smtp", port) }).email, silent);
      const error = await deliveryError(mailer.send(mail));
      expect(error.message).to.match(/^smtp: server unreachable \(DEPTH_ZERO_SELF_SIGNED_CERT\)$/);
      expect(delivered).to.be.empty;
    });

    it("requires STARTTLS from a server off this machine; a relay on loopback may speak plain SMTP", () => {
      expect(smtpTransportOptions("smtp://mail.example.com", undefined, 5000)).to.include({ host: "mail.example.com", port: 587, secure: false, requireTLS: true });
      expect(smtpTransportOptions("smtp://[2001:db8::25]:2525", undefined, 5000)).to.include({ host: "2001:db8::25", port: 2525, requireTLS: true });
      for (const relay of ["smtp://localhost:25", "smtp://127.0.0.1:25", "smtp://[::1]:25"]) {
        expect(smtpTransportOptions(relay, undefined, 5000), relay).to.include({ requireTLS: false, port: 25 });
      }
      expect(smtpTransportOptions("smtps://mail.example.com", undefined, 5000)).to.include({ port: 465, secure: true, requireTLS: false });
      expect(smtpTransportOptions("smtp://mail.example.com", undefined, 1234)).to.include({ connectionTimeout: 1234, greetingTimeout: 1234, socketTimeout: 1234 });
    });

    it("fails with the SMTP reply code when the server refuses the recipient, and logs only its kind and a masked address", async () => {
      const { port } = await startSmtp(tls, {
        onRcptTo: (address, _session, callback) => callback(Object.assign(new Error(`mailbox ${address.address} unavailable`), { responseCode: 550 })),
      });
      const { lines, logger } = capturingLogger();
      const before = await deliveriesTimed("smtp", "failed");

      const error = await deliveryError(smtpMailer(smtpUrl("smtp", port), logger).send(mail));

      expect(error).to.include({ provider: "smtp", message: "smtp: server refused it (EENVELOPE, SMTP 550)" });
      expect(lines).to.have.length(1);
      expect(JSON.parse(lines[0]!)).to.include({ level: "warn", provider: "smtp", reason: "EENVELOPE", smtpStatus: 550, to: "b***@example.com" });
      expectNothingSecretIn(lines[0]!);
      expect(await deliveriesTimed("smtp", "failed")).to.equal(before + 1);
    });

    it("fails with EAUTH when the server refuses the credentials, without quoting them", async () => {
      const { port, delivered } = await startSmtp(tls);
      const { lines, logger } = capturingLogger();
      const error = await deliveryError(smtpMailer(smtpUrl("smtp", port, "wrong password"), logger).send(mail));
      expect(error.message).to.equal("smtp: server refused it (EAUTH, SMTP 535)");
      expect(delivered).to.be.empty;
      expectNothingSecretIn(lines.join("\n"));
      expect(lines.join("\n")).not.to.contain("wrong password");
    });

    it("fails with ECONNREFUSED when the server is down", async () => {
      const { port } = await startSmtp(tls);
      await running.pop()!();
      const { lines, logger } = capturingLogger();
      const error = await deliveryError(smtpMailer(smtpUrl("smtp", port), logger).send(mail));
      expect(error.message).to.equal("smtp: server unreachable (ECONNREFUSED)");
      expect(JSON.parse(lines[0]!)).to.include({ provider: "smtp", reason: "ECONNREFUSED", to: "b***@example.com" });
      expectNothingSecretIn(lines.join("\n"));
    });

    it("gives up on a server that never greets, after EMAIL_TIMEOUT_MS", async () => {
      const mute = createTcpServer(() => {});
      await new Promise<void>((resolve) => mute.listen(0, "127.0.0.1", resolve));
      running.push(() => new Promise((resolve) => mute.close(() => resolve())));
      const port = (mute.address() as AddressInfo).port;
      const error = await deliveryError(smtpMailer(smtpUrl("smtp", port), silent, { EMAIL_TIMEOUT_MS: "200" }).send(mail));
      expect(error.message).to.equal("smtp: server unreachable (ETIMEDOUT)");
    });
  });

  describe("by webhook", () => {
    interface Received {
      headers: IncomingMessage["headers"];
      body: string;
    }

    async function startWebhook(answer: (res: ServerResponse) => void) {
      const received: Received[] = [];
      const server: Server = createServer((req, res) => {
        let body = "";
        req.on("data", (chunk) => (body += chunk));
        req.on("end", () => {
          received.push({ headers: req.headers, body });
          answer(res);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      running.push(() => {
        server.closeAllConnections();
        return new Promise((resolve) => server.close(() => resolve()));
      });
      return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mail`, received };
    }

    it("posts {from, to, subject, text, html} as JSON, signed with the secret", async () => {
      const { url, received } = await startWebhook((res) => res.writeHead(202).end());
      const secret = "webhook-secret";
      const mailer = createMailer(loadConfig({ EMAIL_PROVIDER: "webhook", EMAIL_WEBHOOK_URL: url, EMAIL_WEBHOOK_SECRET: secret, EMAIL_FROM: from }).email, silent);

      await mailer.send(mail);

      const [call] = received as [Received];
      expect(call.headers["content-type"]).to.equal("application/json");
      expect(JSON.parse(call.body)).to.deep.equal({ from, to: mail.to, subject: mail.subject, text: mail.text, html: mail.html });
      const timestamp = call.headers["x-portcullis-timestamp"] as string;
      const expected = createHmac("sha256", secret).update(`${timestamp}.${call.body}`).digest("hex");
      expect(call.headers["x-portcullis-signature"]).to.equal(`sha256=${expected}`);
    });

    it("fails delivery when the webhook answers other than 2xx, logging the status and a masked address only", async () => {
      const { url } = await startWebhook((res) => res.writeHead(500).end(`could not send to ${mail.to}`));
      const { lines, logger } = capturingLogger();
      const mailer = createMailer(loadConfig({ EMAIL_PROVIDER: "webhook", EMAIL_WEBHOOK_URL: url }).email, logger);
      const error = await deliveryError(mailer.send(mail));
      expect(error.message).to.equal("webhook: provider answered HTTP 500");
      expect(JSON.parse(lines[0]!)).to.include({ level: "warn", provider: "webhook", status: 500, to: "b***@example.com" });
      expectNothingSecretIn(lines.join("\n"));
    });

    it("fails delivery when the webhook is down", async () => {
      const { url } = await startWebhook(() => {});
      await running.pop()!();
      const mailer = createMailer(loadConfig({ EMAIL_PROVIDER: "webhook", EMAIL_WEBHOOK_URL: url }).email, silent);
      expect((await deliveryError(mailer.send(mail))).message).to.equal("webhook: provider unreachable (ECONNREFUSED)");
    });
  });
});
