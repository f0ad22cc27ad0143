import { execFile } from "node:child_process";
import { connect } from "node:net";
import { promisify } from "node:util";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { Running } from "../../services/app/servers.js";
import { ConfigError, loadConfig } from "../../services/platform/config.js";
import { metricsRegistry } from "../../services/platform/metrics.js";
import { connectRedis } from "../../services/platform/redis.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { connectCall, grpcClient } from "../support/clients.js";
import { mintUserToken, sharedStores, startPlatform } from "../support/platform.js";
import { freePort, RedisServer } from "../support/redis-servers.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { dropTestDatabases } from "../support/stores.js";

const run = promisify(execFile);

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** What Prometheus would read from the port. */
async function scrape(port: number): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).to.equal(200);
  expect(response.headers.get("content-type")).to.match(/^text\/plain; version=0\.0\.4/);
  return samplesOf(await response.text());
}

/** Every sample line of the Prometheus text format. */
function samplesOf(text: string): Sample[] {
  return text
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const [, name, labels = "", value] = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line)!;
      return {
        name: name!,
        labels: Object.fromEntries([...labels.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(([, key, text]) => [key!, text!])),
        value: Number(value),
      };
    });
}

/** The samples named `name` whose labels include `labels`. */
function find(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value));
}

const device = { deviceId: "metrics-device", deviceType: DeviceType.WEB, deviceName: "Metrics" };
const getProfile = "/portcullis.v1.AuthService/GetProfile";

describe("The metrics port", () => {
  const inbox = new SmsInbox();
  let running: Running;
  let auth: ReturnType<typeof grpcClient<typeof AuthService>>;

  before(async function () {
    this.timeout(60_000);
    running = await startPlatform({
      ...(await sharedStores()),
      METRICS_PORT: String(await freePort()),
      ...(await inbox.env()),
      TRUSTED_PROXIES: "127.0.0.1",
      RATE_LIMITS: "register_ip=1/3600,otp_send_global=1000/60",
    });
    auth = grpcClient(AuthService, running.grpcPort!);
  });

  after(async () => {
    auth?.close();
    await running?.stop();
    await inbox.stop();
    await dropTestDatabases();
  });

  it("serves the calls by door, the refusals, the stores, the batches and the process defaults", async function () {
    this.timeout(30_000);
    const signedIn = await signInByPhone(running.grpcPort!, inbox, newPhone());
    const token = signedIn!.tokens!.accessToken;
    expect((await auth.call("getProfile", {}, bearer(token))).error).to.equal(undefined);
    expect((await connectCall(running.httpPort!, getProfile, {}, bearer(token))).status).to.equal(200);
    expect((await auth.call("refreshToken", { refreshToken: signedIn!.tokens!.refreshToken })).error).to.equal(undefined);
    expect((await auth.call("getProfile", {})).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    // The limit is spent before the request's fields are checked.
    expect((await auth.call("register", { email: "not an email", password: "", device })).error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect((await auth.call("register", { email: "not an email", password: "", device })).error?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);

    const samples = await scrape(running.metricsPort!);
    const one = (name: string, labels: Record<string, string>) => {
      const found = find(samples, name, labels);
      expect(found, `${name} ${JSON.stringify(labels)}`).to.have.lengthOf(1);
      return found[0]!.value;
    };
    for (const door of ["grpc", "gateway"]) {
      expect(one("portcullis_rpc_calls_total", { method: getProfile, door, code: "ok" })).to.be.at.least(1);
      expect(one("portcullis_rpc_duration_seconds_count", { method: getProfile, door })).to.be.at.least(1);
      expect(one("portcullis_rpc_duration_seconds_bucket", { method: getProfile, door, le: "0.001" })).to.be.at.least(0);
      expect(one("portcullis_rpc_duration_seconds_bucket", { method: getProfile, door, le: "0.5" })).to.be.at.least(0);
      expect(one("portcullis_rpc_in_flight", { door })).to.equal(0);
    }
    expect(one("portcullis_rpc_calls_total", { method: getProfile, door: "grpc", code: "Unauthenticated" })).to.be.at.least(1);
    expect(one("portcullis_tokens_refused_total", { reason: "TOKEN_MISSING" })).to.be.at.least(1);
    expect(one("portcullis_rate_limit_refusals_total", { rule: "register_ip" })).to.be.at.least(1);
    expect(one("portcullis_rpc_calls_total", { method: "/portcullis.v1.AuthService/Register", door: "grpc", code: "ResourceExhausted" })).to.be.at.least(1);

    expect(one("portcullis_db_pool_connections", { state: "total" })).to.be.at.least(1);
    expect(one("portcullis_db_pool_connections", { state: "idle" })).to.be.at.least(0);
    expect(one("portcullis_db_pool_connections", { state: "waiting" })).to.be.at.least(0);
    for (const command of ["select", "insert", "update"]) {
      expect(one("portcullis_db_statement_duration_seconds_count", { command })).to.be.at.least(1);
    }
    const redisCommands = find(samples, "portcullis_redis_command_duration_seconds_count");
    expect(redisCommands.map((sample) => sample.labels.command)).to.include("evalsha");
    expect(one("portcullis_batch_size_count", { batch: "otp_attempt" })).to.be.at.least(1);
    expect(one("portcullis_batch_size_count", { batch: "refresh_rotation" })).to.be.at.least(1);

    expect(find(samples, "process_cpu_user_seconds_total")).to.have.lengthOf(1);
    expect(find(samples, "nodejs_eventloop_lag_seconds")).to.have.lengthOf(1);
  });

  it("grows by no series per user, address or phone number, and names none of them", async function () {
    this.timeout(60_000);
    const users = 200;
    const phones = 50;
    const addresses = new Set<string>();
    const address = (i: number) => {
      const ip = `198.51.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      addresses.add(ip);
      return ip;
    };
    const profileCalls = async (from: number, count: number) => {
      const secrets = await Promise.all(Array.from({ length: count }, () => mintUserToken(running)));
      await Promise.all(
        secrets.map(({ token }, i) => {
          const headers = { ...bearer(token), "x-forwarded-for": address(from + i) };
          return i % 2 ? connectCall(running.httpPort!, getProfile, {}, headers) : auth.call("getProfile", {}, headers);
        }),
      );
      return secrets.map(({ token }) => token);
    };
    const codeSends = async (from: number, count: number) => {
      const numbers = Array.from({ length: count }, () => newPhone());
      const results = await Promise.all(numbers.map((phoneNumber, i) => auth.call("sendOtp", { phoneNumber }, { "x-forwarded-for": address(from + i) })));
      for (const result of results) expect(result.error).to.equal(undefined);
      return numbers;
    };
    // Every kind of call once first, so what follows can only add series for who made it.
    await profileCalls(1000, 4);
    await codeSends(1100, 2);
    const before = await scrape(running.metricsPort!);

    const tokens: string[] = [];
    for (let i = 0; i < users; i += 50) tokens.push(...(await profileCalls(i, 50)));
    const numbers = await codeSends(500, phones);
    const after = await scrape(running.metricsPort!);

    // A label per user, address or number would add hundreds; what may appear is a garbage-collection kind seen for the first time.
    expect(after.length - before.length).to.be.at.most(40);
    const subjects = tokens.map((token) => JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()).sub as string);
    const personal = new Set([...tokens, ...subjects, ...numbers, ...addresses]);
    const unbounded = [
      /^[\da-f]{8}-[\da-f]{4}-[\da-f]{4}-[\da-f]{4}-[\da-f]{12}$/i, // a user or session id
      /^\d{1,3}(\.\d{1,3}){3}$|:.*:/, // an IPv4 or IPv6 address
      /^\+?\d{7,}$/, // a phone number
      /^eyJ[\w-]*\.[\w-]+\.[\w-]*$/, // a JWT
    ];
    for (const sample of after) {
      for (const value of Object.values(sample.labels)) {
        expect(personal.has(value), `${sample.name} ${value}`).to.equal(false);
        for (const pattern of unbounded) expect(value, sample.name).to.not.match(pattern);
      }
    }
  });

  it("answers nothing but GET /metrics", async () => {
    expect((await fetch(`http://127.0.0.1:${running.metricsPort}/`)).status).to.equal(404);
    expect((await fetch(`http://127.0.0.1:${running.metricsPort}/metrics`, { method: "POST" })).status).to.equal(404);
  });

  it("is served by a gateway-only process too, and closed when it stops", async function () {
    this.timeout(30_000);
    const gateway = await startPlatform({
      MODE: "gateway",
      GATEWAY_UPSTREAM: `http://127.0.0.1:${running.grpcPort}`,
      METRICS_PORT: String(await freePort()),
    });
    const port = gateway.metricsPort!;
    try {
      expect(find(await scrape(port), "process_cpu_user_seconds_total")).to.have.lengthOf(1);
    } finally {
      await gateway.stop();
    }
    const refused = await new Promise<string | undefined>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => (socket.destroy(), resolve(undefined)));
      socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code));
    });
    expect(refused).to.equal("ECONNREFUSED");
  });

  it("is off with METRICS_PORT=0, on 9464 by default, and refuses a port that is not one", async function () {
    this.timeout(30_000);
    const gateway = await startPlatform({ MODE: "gateway", GATEWAY_UPSTREAM: `http://127.0.0.1:${running.grpcPort}`, METRICS_PORT: "0" });
    try {
      expect(gateway.metricsPort).to.equal(undefined);
      expect(gateway.httpPort).to.be.a("number");
    } finally {
      await gateway.stop();
    }
    expect(loadConfig({}).metricsPort).to.equal(9464);
    expect(() => loadConfig({ METRICS_PORT: "65536" })).to.throw(ConfigError, /^METRICS_PORT: expected a whole number/);
  });
});

describe("Redis command metrics", () => {
  // Its own Redis: pausing the shared one would stall every other test run.
  let redis: RedisServer;

  before(async () => {
    redis = new RedisServer(await freePort());
    await redis.start();
  });
  after(() => redis?.destroy());

  it("count a command that fails, or times out, as an error of that command", async function () {
    this.timeout(20_000);
    // No platform here: the registry as the port would serve it.
    const errors = async (command: string) =>
      find(samplesOf(await metricsRegistry.metrics()), "portcullis_redis_errors_total", { command })[0]?.value ?? 0;
    const client = await connectRedis(redis.url, false, 200);
    try {
      const [hincrbyBefore, getBefore] = [await errors("hincrby"), await errors("get")];
      await client.set("metrics:text", "not a hash");
      await client.hincrby("metrics:text", "field", 1).catch(() => {});
      await run("redis-cli", ["-p", String(redis.port), "client", "pause", "1000", "all"]);
      const timedOut = await client.get("metrics:text").then(
        () => undefined,
        (error: Error) => error.message,
      );
      expect(timedOut).to.match(/timed out/i);
      expect(await errors("hincrby")).to.equal(hincrbyBefore + 1);
      expect(await errors("get")).to.equal(getBefore + 1);
    } finally {
      client.disconnect();
    }
  });
});
