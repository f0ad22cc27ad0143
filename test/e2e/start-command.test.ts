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
