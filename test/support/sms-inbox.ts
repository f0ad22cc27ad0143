import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** A local SMS webhook that keeps what it receives, so tests can read codes like a phone would. */
export class SmsInbox {
  private readonly messages: { to: string; body: string }[] = [];
  private server?: Server;
  /** Set to make the "provider" fail. */
  failing = false;

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        if (this.failing) return res.writeHead(503).end();
        this.messages.push(JSON.parse(body));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/sms`;
  }

  /** The environment that sends a platform's SMS here. */
  async env(): Promise<Record<string, string>> {
    return { SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: await this.start() };
  }

  /** The code in the latest SMS to this number. */
  codeFor(phone: string): string {
    const message = this.messages.filter((m) => m.to === phone).at(-1);
    if (!message) throw new Error(`no SMS to ${phone}`);
    return /\b(\d{6})\b/.exec(message.body)![1]!;
  }

  countFor(phone: string): number {
    return this.messages.filter((m) => m.to === phone).length;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
