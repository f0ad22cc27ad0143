/**
 * `npm run bench`: serves each scenario of scenarios.ts in this process and
 * drives it from a separate load process (load.ts), against real PostgreSQL
 * and Redis in a throw-away database and key prefix. Prints a table, then as
 * the last line one JSON object with the figures and the ratios to the
 * baseline of the same door. Exits 1 when a scenario has over 1% errors.
 *
 * BENCH_SECONDS (default 5) sets the measured window per scenario;
 * BENCH_ONLY=grpc_bare,grpc_auth runs only the scenarios named (for profiling);
 * OTEL_EXPORTER_OTLP_ENDPOINT traces every call to that collector.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";
import { createApp } from "../../services/app/app.js";
import { loadConfig } from "../../services/platform/config.js";
import { createLogger } from "../../services/platform/logger.js";
import { startTracing } from "../../services/platform/tracing.js";
import type { LoadResult, LoadSpec } from "./load.js";
import { measureFlows } from "./flows.js";
import { scenarios, type BenchContext } from "./scenarios.js";

const load = {
  concurrency: 64,
  connections: 2,
  warmupMs: 1000,
  durationMs: Number(process.env.BENCH_SECONDS ?? 5) * 1000,
};
const maxErrorRate = 0.01;
const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const runId = randomBytes(4).toString("hex");

/** Undone in reverse order, on success, failure and Ctrl-C alike; each runs once. */
const cleanups: (() => Promise<unknown> | void)[] = [];
async function cleanUp(): Promise<void> {
  for (let step = cleanups.pop(); step; step = cleanups.pop()) {
    await Promise.resolve()
      .then(step)
      .catch((error) => console.error("bench clean-up:", error));
  }
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

interface Figures extends LoadResult {
  /**
   * This process's CPU time (all threads) per call over the measured window:
   * the server's own cost, apart from the load process and Redis that share
   * the 2 cores. It moves less than req/s when other work runs on the machine.
   */
  cpuUsPerCall: number;
}

/** Runs load.ts in its own process, so the client does not share the server's event loop. */
let child: ChildProcess | undefined;
function runLoad(spec: LoadSpec): Promise<Figures> {
  return new Promise((resolve, reject) => {
    const script = fileURLToPath(new URL("./load.ts", import.meta.url));
    child = spawn(process.execPath, ["--import", "tsx", script, JSON.stringify(spec)], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    let cpuAtOpen: NodeJS.CpuUsage | undefined;
    let cpuInWindow: NodeJS.CpuUsage | undefined;
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      if (!cpuAtOpen && stdout.includes("window open\n")) cpuAtOpen = process.cpuUsage();
      if (cpuAtOpen && !cpuInWindow && stdout.includes("window closed\n")) cpuInWindow = process.cpuUsage(cpuAtOpen);
    });
    // A hung server must not hang the bench: the load process gets a bounded time.
    const timer = setTimeout(() => child?.kill("SIGKILL"), spec.warmupMs + spec.durationMs + 20_000);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      child = undefined;
      const last = stdout.trim().split("\n").at(-1) ?? "";
      if (code !== 0 || !cpuInWindow || !last.startsWith("{")) {
        return reject(new Error(`load generator exited with ${signal ?? code}, last said: ${last}`));
      }
      const result = JSON.parse(last) as LoadResult;
      const calls = result.ok + result.errors;
      resolve({ ...result, cpuUsPerCall: calls && Math.round((cpuInWindow.user + cpuInWindow.system) / calls) });
    });
  });
}

async function main(): Promise<number> {
  const database = `portcullis_bench_${runId}`;
  await adminQuery(`CREATE DATABASE ${database}`);
  cleanups.push(() => adminQuery(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`));
  const databaseUrl = new URL(adminUrl);
  databaseUrl.pathname = `/${database}`;
  const redisKeyPrefix = `bench:${runId}:`;
  cleanups.push(async () => {
    const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      for await (const keys of redis.scanStream({ match: `${redisKeyPrefix}*`, count: 1000 })) {
        if ((keys as string[]).length > 0) await redis.unlink(...(keys as string[]));
      }
    } finally {
      redis.disconnect();
    }
  });

  const env = {
    DATABASE_URL: databaseUrl.toString(),
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisKeyPrefix,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    HOST: "127.0.0.1",
    // The doors' scenarios send no code; the flows point SMS and email at a local webhook.
    SMS_PROVIDER: "console",
    EMAIL_PROVIDER: "console",
    // The flows measure sign-in itself; a captcha would only time a stand-in.
    CAPTCHA_PROVIDER: "none",
    OTP_ALLOWED_COUNTRIES: "*",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    // Info, as in production: the chain's one log line per call is part of its cost.
    LOG_LEVEL: "info",
    // Far above what the bench sends, so the limiter's Redis round trip is
    // measured without ever refusing a call.
    RATE_LIMITS: "api_user=100000000/60,api_ip=100000000/60",
    // Set, every call is traced to it: tracing's cost, measured against a collector or a stand-in.
    ...(process.env.OTEL_EXPORTER_OTLP_ENDPOINT ? { OTEL_EXPORTER_OTLP_ENDPOINT: process.env.OTEL_EXPORTER_OTLP_ENDPOINT } : {}),
  };
  const config = loadConfig(env);
  // Logs go to /dev/null: written (so their cost counts), not shown. Never
  // ended: the app can still log after close() (the revocation feed reports
  // its subscriber's close event late), and writing to an ended stream throws.
  // An open /dev/null does not keep the process alive.
  const logger = createLogger(config.logLevel, pino.destination({ dest: "/dev/null", sync: false }));
  cleanups.push(startTracing(config.tracing, logger));
  const app = await createApp(config, logger);
  cleanups.push(() => app.close());

  const { token } = await app.tokens.issue({
    kind: "user",
    subject: randomUUID(),
    sessionId: randomUUID(),
    deviceId: "bench",
    kycLevel: 1,
    kycStatus: "",
    permissions: [],
    amr: ["otp"],
    sessionExpiresAt: Math.floor(Date.now() / 1000) + 86_400,
  });
  const ctx: BenchContext = { app, config, logger, userToken: token };

  const only = process.env.BENCH_ONLY?.split(",");
  const chosen = scenarios.filter((scenario) => !only || only.includes(scenario.name));
  const results = new Map<string, Figures>();
  for (const scenario of chosen) {
    const { target, stop } = await scenario.start(ctx);
    try {
      results.set(scenario.name, await runLoad({ ...target, ...load }));
    } finally {
      await stop();
    }
  }

  // The flows need their own inputs per call (codes, refresh tokens, sessions): measured in-process, after the doors.
  const flows = !only || only.includes("flows") ? await measureFlows(env, loadConfig, logger) : undefined;

  const ms = (value: number) => value.toFixed(2);
  const rows = [["scenario", "req/s", "p50 ms", "p99 ms", "errors", "server CPU µs/call"]];
  for (const [name, r] of results) rows.push([name, String(r.rps), ms(r.p50Ms), ms(r.p99Ms), String(r.errors), String(r.cpuUsPerCall)]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "));
  console.log(`(${load.concurrency} in flight, ${load.warmupMs / 1000} s warm-up, ${load.durationMs / 1000} s measured per scenario)`);

  let failed = false;
  const figures: Record<string, number> = {};
  for (const scenario of chosen) {
    const r = results.get(scenario.name)!;
    const baseline = scenario.baseline && results.get(scenario.baseline);
    if (!baseline) continue;
    figures[`${scenario.name}_vs_bare`] = Math.round((r.rps / baseline.rps) * 100) / 100;
    // The same ratio from CPU per call (bare / scenario): what req/s would be if the server alone were the limit.
    figures[`${scenario.name}_vs_bare_cpu`] = Math.round((baseline.cpuUsPerCall / r.cpuUsPerCall) * 100) / 100;
  }
  for (const [name, r] of results) {
    Object.assign(figures, { [`${name}_rps`]: r.rps, [`${name}_p50_ms`]: +ms(r.p50Ms), [`${name}_p99_ms`]: +ms(r.p99Ms), [`${name}_errors`]: r.errors, [`${name}_cpu_us`]: r.cpuUsPerCall });
    if (r.ok === 0 || r.errors > maxErrorRate * (r.ok + r.errors)) {
      failed = true;
      console.error(`${name}: ${r.errors} errors of ${r.ok + r.errors} calls, e.g. ${r.sampleErrors.join("; ")}`);
    }
  }
  if (flows) {
    console.log();
    const flowRows = [["flow (in-process, whole chain + handler)", "ops/s", "p50 ms", "p99 ms", "count"]];
    for (const f of flows.figures) flowRows.push([f.name, String(f.opsPerSecond), ms(f.p50Ms), ms(f.p99Ms), String(f.count)]);
    flowRows.push(["revocation: A revokes → B refuses", "", ms(flows.revocation.p50Ms), ms(flows.revocation.p99Ms), String(flows.revocation.count)]);
    const flowWidths = flowRows[0]!.map((_, i) => Math.max(...flowRows.map((row) => row[i]!.length)));
    for (const row of flowRows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(flowWidths[i]!) : cell.padStart(flowWidths[i]!))).join("  "));
    console.log("(each flow measured after as many operations again, unmeasured, to warm up)");
    const rate = (name: string) => flows.figures.find((f) => f.name === name)!.opsPerSecond;
    Object.assign(figures, {
      verify_otp_per_s: rate("verify_otp_sign_in"),
      refresh_per_s: rate("refresh_token"),
      login_per_s: rate("login"),
      argon2id_verify_per_s: rate("argon2id_verify_raw"),
      login_vs_argon2id: Math.round((rate("login") / rate("argon2id_verify_raw")) * 100) / 100,
      revocation_p50_ms: flows.revocation.p50Ms,
      revocation_p99_ms: flows.revocation.p99Ms,
    });
  }
  console.log(JSON.stringify(figures));
  return failed ? 1 : 0;
}

process.once("SIGINT", () => {
  child?.kill("SIGKILL");
  void cleanUp().finally(() => process.exit(130));
});

try {
  process.exitCode = await main();
} catch (error) {
  console.error("bench failed:", error);
  process.exitCode = 1;
} finally {
  child?.kill("SIGKILL");
  await cleanUp();
}
