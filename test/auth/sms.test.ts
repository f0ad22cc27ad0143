import { createHmac } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { loadConfig } from "../../services/platform/config.js";
import { createLogger } from "../../services/platform/logger.js";
import { createSmsProvider, SmsDeliveryError, type SmsMessage } from "../../services/auth/sms.js";

const message: SmsMessage = { to: "+447700900123", body: "Your Portcullis code is 123456" };
const twilioEnv = {
  SMS_PROVIDER: "twilio",
  TWILIO_ACCOUNT_SID: "AC0123456789abcdef0123456789abcdef",
  TWILIO_AUTH_TOKEN: "auth-token-never-shown",
  TWILIO_FROM: "+15005550006",
};

interface Received {
  method?: string;
  url?: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/** A stand-in provider on 127.0.0.1 that records each call and answers with `answer`. */
async function startProvider(answer: (res: ServerResponse) => void) {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      received.push({ method: req.method, url: req.url, headers: req.headers, body });
      answer(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received, server };
}

const running: Server[] = [];
const provider = async (answer: (res: ServerResponse) => void) => {
  const started = await startProvider(answer);
  running.push(started.server);
  return started;
};

/** The rejection of `promise`, which must be an SmsDeliveryError that gives nothing secret away. */
async function deliveryError(promise: Promise<void>): Promise<SmsDeliveryError> {
  const error = await promise.then(
    () => expect.fail("the message was reported sent"),
    (error: unknown) => error,
  );
  expect(error).to.be.instanceOf(SmsDeliveryError);
  const { message: text } = error as SmsDeliveryError;
  expect(text).not.to.contain("123456");
  expect(text).not.to.contain(twilioEnv.TWILIO_AUTH_TOKEN);
  return error as SmsDeliveryError;
}

describe("SMS providers", () => {
  const logger = createLogger("silent");

  afterEach(async () => {
    for (const server of running.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("prints the message on stdout for development, by default", async () => {
    const sms = createSmsProvider(loadConfig({}).sms, logger);
    const written: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((chunk: string) => written.push(chunk) > 0) as typeof process.stdout.write;
    try {
      await sms.send(message);
    } finally {
      process.stdout.write = write;
    }
    expect(sms.name).to.equal("console");
    expect(written).to.deep.equal(["[sms to +447700900123] Your Portcullis code is 123456\n"]);
  });

  it("posts the message to the webhook, signed with the secret", async () => {
    const { url, received } = await provider((res) => res.writeHead(204).end());
    const secret = "webhook-secret";
    const sms = createSmsProvider(loadConfig({ SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: `${url}/sms`, SMS_WEBHOOK_SECRET: secret }).sms, logger);

    await sms.send(message);

    expect(received).to.have.length(1);
    const [call] = received as [Received];
    expect(call).to.deep.include({ method: "POST", url: "/sms" });
    expect(call.headers["content-type"]).to.equal("application/json");
    expect(JSON.parse(call.body)).to.deep.equal(message);
    const timestamp = call.headers["x-portcullis-timestamp"] as string;
    expect(Number(timestamp)).to.be.closeTo(Date.now() / 1000, 5);
    const expected = createHmac("sha256", secret).update(`${timestamp}.${call.body}`).digest("hex");
    expect(call.headers["x-portcullis-signature"]).to.equal(`sha256=${expected}`);
  });

  it("posts to the webhook unsigned when no secret is set", async () => {
    const { url, received } = await provider((res) => res.writeHead(200).end());
    await createSmsProvider(loadConfig({ SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: url }).sms, logger).send(message);
    expect(JSON.parse(received[0]!.body)).to.deep.equal(message);
    expect(received[0]!.headers).not.to.have.any.keys("x-portcullis-signature", "x-portcullis-timestamp");
  });

  it("sends through Twilio's Messages API with basic auth and form fields", async () => {
    const { url, received } = await provider((res) => res.writeHead(201, { "content-type": "application/json" }).end('{"sid":"SM1","status":"queued"}'));
    const sms = createSmsProvider(loadConfig({ ...twilioEnv, TWILIO_BASE_URL: url }).sms, logger);

    await sms.send(message);

    const [call] = received as [Received];
    expect(call).to.deep.include({ method: "POST", url: `/2010-04-01/Accounts/${twilioEnv.TWILIO_ACCOUNT_SID}/Messages.json` });
    const credentials = Buffer.from(`${twilioEnv.TWILIO_ACCOUNT_SID}:${twilioEnv.TWILIO_AUTH_TOKEN}`).toString("base64");
    expect(call.headers.authorization).to.equal(`Basic ${credentials}`);
    expect(call.headers["content-type"]).to.equal("application/x-www-form-urlencoded");
    expect(Object.fromEntries(new URLSearchParams(call.body))).to.deep.equal({ To: message.to, Body: message.body, From: twilioEnv.TWILIO_FROM });
  });

  it("sends through a Twilio messaging service instead of a sender number when one is set", async () => {
    const { url, received } = await provider((res) => res.writeHead(201).end("{}"));
    const { TWILIO_FROM: _from, ...withoutFrom } = twilioEnv;
    const env = { ...withoutFrom, TWILIO_MESSAGING_SERVICE_SID: "MG0123", TWILIO_BASE_URL: url };
    await createSmsProvider(loadConfig(env).sms, logger).send(message);
    expect(Object.fromEntries(new URLSearchParams(received[0]!.body))).to.deep.equal({ To: message.to, Body: message.body, MessagingServiceSid: "MG0123" });
  });

  it("reports Twilio's error code, not what was sent, when Twilio refuses the message", async () => {
    const { url } = await provider((res) =>
      res
        .writeHead(400, { "content-type": "application/json" })
        .end(JSON.stringify({ code: 21211, message: `The 'To' number ${message.to} is not valid. Body: ${message.body}`, status: 400 })),
    );
    const sms = createSmsProvider(loadConfig({ ...twilioEnv, TWILIO_BASE_URL: url }).sms, logger);

    const error = await deliveryError(sms.send(message));
    expect(error).to.include({ provider: "twilio", status: 400, providerCode: 21211 });
    expect(error.message).not.to.contain(message.to);
  });

  it("fails delivery when the webhook answers 500", async () => {
    const { url } = await provider((res) => res.writeHead(500).end("boom"));
    const sms = createSmsProvider(loadConfig({ SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: url }).sms, logger);
    expect(await deliveryError(sms.send(message))).to.include({ provider: "webhook", status: 500 });
  });

  it("does not follow a redirect with the code", async () => {
    const elsewhere = await provider((res) => res.writeHead(200).end());
    const { url } = await provider((res) => res.writeHead(307, { location: elsewhere.url }).end());
    const sms = createSmsProvider(loadConfig({ SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: url }).sms, logger);
    expect(await deliveryError(sms.send(message))).to.include({ status: 307 });
    expect(elsewhere.received).to.be.empty;
  });

  it("gives up when the provider does not answer within SMS_TIMEOUT_MS", async () => {
    const { url } = await provider(() => {});
    const sms = createSmsProvider(loadConfig({ SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: url, SMS_TIMEOUT_MS: "100" }).sms, logger);
    const started = Date.now();
    const error = await deliveryError(sms.send(message));
    expect(Date.now() - started).to.be.below(2000);
    expect(error.message).to.match(/no answer within 100 ms/);
  });

  it("fails delivery when the provider refuses the connection", async () => {
    const { url, server } = await startProvider(() => {});
    await new Promise((resolve) => server.close(resolve));
    const sms = createSmsProvider(loadConfig({ ...twilioEnv, TWILIO_BASE_URL: url }).sms, logger);
    expect((await deliveryError(sms.send(message))).message).to.match(/unreachable \(ECONNREFUSED\)/);
  });

  it("logs a failure with the provider, status and a masked number only", async () => {
    const lines: string[] = [];
    const capturing = createLogger("info", { write: (line: string) => void lines.push(line) });
    const { url } = await provider((res) => res.writeHead(503).end());
    const sms = createSmsProvider(loadConfig({ ...twilioEnv, TWILIO_BASE_URL: url }).sms, capturing);

    await deliveryError(sms.send(message));

    expect(lines).to.have.length(1);
    const line = JSON.parse(lines[0]!);
    expect(line).to.include({ level: "warn", provider: "twilio", status: 503 });
    expect(line.phone, "masked number").to.match(/^\+44\*+23$/);
    for (const secret of ["123456", message.to, twilioEnv.TWILIO_AUTH_TOKEN]) expect(lines[0]).not.to.contain(secret);
  });
});
