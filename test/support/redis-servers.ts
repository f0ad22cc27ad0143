import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A redis-server of the test's own on a loopback port, so it can be stopped and restarted. */
export class RedisServer {
  private process?: ChildProcess;
  private readonly dir = mkdtempSync(join(tmpdir(), "portcullis-redis-"));

  constructor(readonly port: number, private readonly cluster = false) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir];
    if (this.cluster) args.push("--cluster-enabled", "yes", "--cluster-config-file", `nodes-${this.port}.conf`);
    this.process = spawn("redis-server", args, { stdio: "ignore" });
    for (let i = 0; i < 50; i++) {
      if (await this.ping()) return;
      await sleep(100);
    }
    throw new Error(`redis-server on ${this.port} did not start`);
  }

  async stop(): Promise<void> {
    const process = this.process;
    if (!process || process.exitCode !== null) return;
    const exited = new Promise((resolve) => process.once("exit", resolve));
    process.kill("SIGKILL");
    await exited;
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async ping(): Promise<boolean> {
    try {
      const { stdout } = await run("redis-cli", ["-p", String(this.port), "ping"]);
      return stdout.trim() === "PONG";
    } catch {
      return false;
    }
  }
}

/** Three masters on loopback ports, joined into a Redis Cluster. */
export async function startRedisCluster(): Promise<{ nodes: RedisServer[]; url: string; stop(): Promise<void> }> {
  const nodes = await Promise.all([0, 1, 2].map(async () => new RedisServer(await freePort(), true)));
  await Promise.all(nodes.map((node) => node.start()));
  await run("redis-cli", ["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", "0", "--cluster-yes"]);
  for (let i = 0; i < 100; i++) {
    const states = await Promise.all(nodes.map((n) => run("redis-cli", ["-p", String(n.port), "cluster", "info"]).then((r) => r.stdout)));
    if (states.every((info) => info.includes("cluster_state:ok"))) break;
    await sleep(100);
  }
  return {
    nodes,
    url: nodes.map((n) => n.url).join(","),
    stop: async () => {
      await Promise.all(nodes.map((n) => n.destroy()));
    },
  };
}
