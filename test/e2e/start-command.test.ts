import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { expect } from "chai";

const startBoundMs = 90_000;
const exitBoundMs = 30_000;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function refuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code === "ECONNREFUSED"));
  });
}

/**
 * A README start command run as a process manager runs it: its own process (group), the embedded default in a
 * temporary folder, signals sent to the npm process only.
 */
class StartCommand {
  readonly output: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;

  constructor(
    script: string[],
    readonly ports: { http: number; grpc: number; metrics: number },
    readonly dataDir: string,
  ) {
    const env: NodeJS.ProcessEnv = {
      ...process.env, DATA_DIR: dataDir, HTTP_PORT: String(ports.http), GRPC_PORT: String(ports.grpc), METRICS_PORT: String(ports.metrics),
    };
    for (const name of ["DATABASE_URL", "REDIS_URL", "KEY_ENCRYPTION_KEY", "HOST", "MODE", "LOG_LEVEL"]) delete env[name];
    this.child = spawn("npm", script, { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    for (const stream of [this.child.stdout!, this.child.stderr!]) stream.on("data", (chunk) => this.output.push(String(chunk)));
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  async serving(): Promise<void> {
    const deadline = Date.now() + startBoundMs;
    let exited = false;
    void this.exited.then(() => (exited = true));
    while (Date.now() < deadline && !exited) {
      const status = await fetch(`http://127.0.0.1:${this.ports.http}/healthz`).then((response) => response.status, () => 0);
      if (status === 200) return;
      await sleep(250);
    }
    throw new Error(`${exited ? "exited" : "not serving"} before /healthz answered:\n${this.tail()}`);
  }

  terminate(): void {
    process.kill(this.child.pid!, "SIGTERM");
  }

  async exit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const gaveUp = new AbortController();
    const exit = await Promise.race([this.exited, sleep(exitBoundMs, undefined, { signal: gaveUp.signal })]);
    gaveUp.abort();
    if (!exit) throw new Error(`still running ${exitBoundMs} ms after SIGTERM:\n${this.tail()}`);
    return exit;
  }

  /** Whatever is left of its process group: a server the signal never reached outlives npm. */
  kill(): void {
    try {
      process.kill(-this.child.pid!, "SIGKILL");
    } catch {
      // Nothing left.
    }
  }

  tail(): string {
    return this.output.join("").split("\n").slice(-20).join("\n");
  }
}

/** A Connect JSON call to the started gateway, as a new user would make it with curl. */
async function call(port: number, method: string, body: unknown, accessToken?: string) {
  const response = await fetch(`http://127.0.0.1:${port}/portcullis.v1.${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(accessToken ? { authorization: `Bearer ${accessToken}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: (await response.json()) as any };
}

/** The code in the latest mail printed on the console to `to` whose subject says `about`. */
async function consoleCode(command: StartCommand, to: string, about: RegExp): Promise<string> {
  for (let tries = 0; tries < 40; tries++) {
    const mails = command.output.join("").split(`[mail to ${to}] `).slice(1).filter((mail) => about.test(mail.split("\n")[0]!));
    const code = /\b(\d{6})\b/.exec(mails.at(-1) ?? "")?.[1];
    if (code) return code;
    await sleep(100);
  }
  throw new Error(`no mail to ${to} about ${about} on the console:\n${command.tail()}`);
}

/**
 * The acceptance journey of the account lifecycle, on the embedded default with
 * its console mail: register, verify, sign in, forget the password, reset it.
 */
async function accountJourney(command: StartCommand): Promise<void> {
  const port = command.ports.http;
  const email = "ana@example.com";
  const device = { deviceId: "web-1", deviceType: "DEVICE_TYPE_WEB", deviceName: "Browser" };
  const registered = await call(port, "AuthService/Register", { email, password: "correct horse battery", device });
  expect(registered.status, JSON.stringify(registered.json)).to.equal(200);
  const early = await call(port, "AuthService/Login", { email, password: "correct horse battery", device });
  expect(early.json.code).to.equal("failed_precondition");
  const verified = await call(port, "AuthService/VerifyEmail", { email, code: await consoleCode(command, email, /confirm your email/) });
  expect(verified.json).to.deep.equal({ email });
  const first = await call(port, "AuthService/Login", { email, password: "correct horse battery", device });
  expect(first.status, JSON.stringify(first.json)).to.equal(200);

  expect((await call(port, "AuthService/RequestPasswordReset", { email })).status).to.equal(200);
  const code = await consoleCode(command, email, /reset your password/);
  const reset = await call(port, "AuthService/ResetPassword", { email, code, newPassword: "a brand new passphrase" });
  expect(reset.json).to.deep.equal({ revokedSessionCount: 1 });
  expect((await call(port, "AuthService/GetProfile", {}, first.json.tokens.accessToken)).status).to.equal(401);
  expect((await call(port, "AuthService/Login", { email, password: "correct horse battery", device })).status).to.equal(401);
  const again = await call(port, "AuthService/Login", { email, password: "a brand new passphrase", device });
  expect(again.status).to.equal(200);
  const history = await call(port, "AuthService/ListSecurityEvents", {}, again.json.tokens.accessToken);
  const types: string[] = history.json.events.map((event: { type: string }) => event.type);
  expect(types).to.include.members(["sign_in", "password.reset", "email.verify"]);
  expect(types[0]).to.equal("sign_in");
}

function describeStart(title: string, script: string[], prepare?: () => Promise<unknown>) {
  describe(title, function () {
    this.timeout(startBoundMs + exitBoundMs + 60_000);
    let command: StartCommand | undefined;

    before(async () => {
      await prepare?.();
      const dataDir = mkdtempSync(join(tmpdir(), "portcullis-start-"));
      command = new StartCommand(script, { http: await freePort(), grpc: await freePort(), metrics: await freePort() }, dataDir);
    });
    after(() => {
      command?.kill();
      if (command) rmSync(command.dataDir, { recursive: true, force: true });
    });

    if (script[0] === "start") {
      it("takes a new email account through verification and a password reset, reading the mails on the console", async () => {
        await command!.serving();
        await accountJourney(command!);
      });
    }

    it("serves, and on SIGTERM to the npm process drains, exits 0 and closes every port", async () => {
      await command!.serving();
      const scrape = await fetch(`http://127.0.0.1:${command!.ports.metrics}/metrics`);
      expect(scrape.status).to.equal(200);
      expect(await scrape.text()).to.match(/^process_cpu_user_seconds_total /m);
      command!.terminate();
      expect(await command!.exit(), command!.tail()).to.deep.equal({ code: 0, signal: null });
      expect(await refuses(command!.ports.http), "gateway port closed").to.equal(true);
      expect(await refuses(command!.ports.grpc), "gRPC port closed").to.equal(true);
      expect(await refuses(command!.ports.metrics), "metrics port closed").to.equal(true);
      expect(command!.tail()).to.match(/"msg":"shutting down"/);
    });
  });
}

describe("The README's start commands", () => {
  describeStart("npm start", ["start"]);
  describeStart("npm run start:prod, after npm run build", ["run", "start:prod"], () => promisify(execFile)("npm", ["run", "build"]));
});
