import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface ReceivedMail {
  from: string;
  to: string;
  subject: string;
  text: string;
  html: string;
}

/** A local email webhook that keeps what it receives, so tests read mails as their owner would. */
export class MailInbox {
  readonly messages: ReceivedMail[] = [];
  private server?: Server;
  /** Set to make the "provider" fail. */
  failing = false;
  private holding?: { arrived: () => void; released: Promise<void> };

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", async () => {
        const holding = this.holding;
        if (holding) {
          holding.arrived();
          await holding.released;
        }
        if (this.failing) return res.writeHead(503).end();
        this.messages.push(JSON.parse(body));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/mail`;
  }

  /** The environment that sends a platform's mail here. */
  async env(): Promise<Record<string, string>> {
    return { EMAIL_PROVIDER: "webhook", EMAIL_WEBHOOK_URL: await this.start() };
  }

  /**
   * Leaves mails unanswered, as a slow provider would, until `release`;
   * `arrived` resolves once the first has reached the inbox.
   */
  hold(): { arrived: Promise<void>; release: () => void } {
    let arrived!: () => void;
    let release!: () => void;
    const arrival = new Promise<void>((resolve) => (arrived = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    this.holding = { arrived, released };
    return {
      arrived: arrival,
      release: () => {
        this.holding = undefined;
        release();
      },
    };
  }

  mailsTo(address: string): ReceivedMail[] {
    return this.messages.filter((m) => m.to === address);
  }

  latest(address: string): ReceivedMail {
    const mail = this.mailsTo(address).at(-1);
    if (!mail) throw new Error(`no mail to ${address}`);
    return mail;
  }

  /** The 6-digit code in the latest mail to this address. */
  codeFor(address: string): string {
    return /\b(\d{6})\b/.exec(this.latest(address).text)![1]!;
  }

  /** The token of the link in the latest mail to this address. */
  tokenFor(address: string): string {
    return /#token=([\w-]+)/.exec(this.latest(address).text)![1]!;
  }

  countFor(address: string): number {
    return this.mailsTo(address).length;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
