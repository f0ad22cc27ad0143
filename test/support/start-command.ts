import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "./redis-servers.js";

export const startBoundMs = 90_000;
export const exitBoundMs = 30_000;

export function refuses(port: number): Promise<boolean> {
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
export class StartCommand {
  readonly output: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;

  constructor(
    script: string[],
    readonly ports: { http: number; grpc: number; metrics: number },
    readonly dataDir: string,
    settings: Record<string, string> = {},
  ) {
    const env: NodeJS.ProcessEnv = {
      ...process.env, DATA_DIR: dataDir, HTTP_PORT: String(ports.http), GRPC_PORT: String(ports.grpc), METRICS_PORT: String(ports.metrics),
    };
    for (const name of ["DATABASE_URL", "REDIS_URL", "KEY_ENCRYPTION_KEY", "HOST", "MODE", "LOG_LEVEL"]) delete env[name];
    Object.assign(env, settings);
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

/** The code in the latest mail or SMS printed on the console to `to`; of mails, those whose subject says `about`. */
export async function consoleCode(command: StartCommand, channel: "mail" | "sms", to: string, about?: RegExp): Promise<string> {
  for (let tries = 0; tries < 40; tries++) {
    const messages = command.output.join("").split(`[${channel} to ${to}] `).slice(1).filter((message) => !about || about.test(message.split("\n")[0]!));
    const code = /\b(\d{6})\b/.exec(messages.at(-1) ?? "")?.[1];
    if (code) return code;
    await sleep(100);
  }
  throw new Error(`no ${channel} to ${to}${about ? ` about ${about}` : ""} on the console:\n${command.tail()}`);
}

type Ports = StartCommand["ports"];

/** `npm <script>` on the embedded default in a fresh data folder, on free ports, with `settings` (which may name the ports) on top. */
export async function launch(script: string[], settings: (ports: Ports) => Record<string, string> = () => ({})): Promise<StartCommand> {
  const dataDir = mkdtempSync(join(tmpdir(), "portcullis-start-"));
  const ports = { http: await freePort(), grpc: await freePort(), metrics: await freePort() };
  return new StartCommand(script, ports, dataDir, settings(ports));
}
