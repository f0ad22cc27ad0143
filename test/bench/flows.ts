/**
 * The sign-in flows and revocation, measured in-process through the whole
 * chain and real handlers (Postgres and Redis included): each operation needs
 * its own input (a code, a refresh token, a session), which a fixed-body load
 * generator cannot send. Concurrency is bounded; so is the work.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { create, type DescMethod, type MessageInitShape } from "@bufbuild/protobuf";
import { hash, verify } from "@node-rs/argon2";
import { createApp, type App } from "../../services/app/app.js";
import type { Config } from "../../services/platform/config.js";
import type { Logger } from "../../services/platform/logger.js";
import type { IncomingCall } from "../../services/platform/incoming-call.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";

export interface FlowFigures {
  name: string;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  count: number;
}

const device = { deviceId: "bench", deviceType: DeviceType.WEB, deviceName: "bench" };

/** Calls one RPC through the app exactly as a door would: chain, then handler. */
async function call<M extends DescMethod>(app: App, method: M, request: MessageInitShape<M["input"]>, headers: Record<string, string> = {}) {
  const incoming: IncomingCall = { method, door: "grpc", peer: "127.0.0.1:1", header: (name) => headers[name] };
  return (await app.dispatch(incoming, create(method.input, request as never))) as any;
}

/** Runs `op` over every input with at most `concurrency` in flight; figures from the wall clock. */
async function measure<T>(name: string, inputs: T[], concurrency: number, op: (input: T) => Promise<unknown>): Promise<FlowFigures> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < inputs.length) {
        const input = inputs[next++]!;
        const t0 = performance.now();
        await op(input);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]! * 100) / 100;
  return { name, opsPerSecond: Math.round(inputs.length / seconds), p50Ms: at(0.5), p99Ms: at(0.99), count: inputs.length };
}

/** A local SMS and email webhook: the codes sent, by phone number or address. */
async function codeSink() {
  const codes = new Map<string, string>();
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk)).on("end", () => {
      // An SMS has a body; a mail has a text.
      const { to, body: sms, text: mail } = JSON.parse(body) as { to: string; body?: string; text?: string };
      codes.set(to, /\d{6}/.exec(sms ?? mail!)![0]);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, codes, close: () => server.close() };
}

/** Measured operations per flow; each flow first runs as many again to warm up. */
const counts = { signIns: 2000, logins: 200, revocations: 200 };

const phones = (count: number, offset: number) => Array.from({ length: count }, (_, i) => `+4479111${String(offset + i).padStart(5, "0")}`);

export async function measureFlows(env: Record<string, string>, loadConfig: (env: Record<string, string>) => Config, logger: Logger) {
  const sms = await codeSink();
  const config = loadConfig({
    ...env,
    SMS_PROVIDER: "webhook",
    SMS_WEBHOOK_URL: sms.url,
    EMAIL_PROVIDER: "webhook",
    EMAIL_WEBHOOK_URL: sms.url,
    OTP_COUNTRY_HOURLY_BUDGET: "10000000",
    OTP_PREFIX_HOURLY_BUDGET: "10000000",
    RATE_LIMITS: [
      "api_user=100000000/60", "api_ip=100000000/60", "otp_send_ip=100000000/3600", "otp_send_global=100000000/60",
      "otp_verify_ip=100000000/3600", "refresh_ip=100000000/60", "login_ip=100000000/900", "register_ip=100000000/3600",
      "verify_email_ip=100000000/3600", "register_global=100000000/60", "verify_email_global=100000000/60",
    ].join(","),
  });
  const a = await createApp(config, logger);
  const b = await createApp(config, logger);
  const figures: FlowFigures[] = [];
  /**
   * The first half of the inputs warms up (the JIT, and each pooled
   * connection's first statements, which cost Postgres 1.5-2 times what
   * later ones do), as the doors' scenarios get a warm-up second; the second
   * half is measured.
   */
  const warmedUp = async <T>(name: string, inputs: T[], concurrency: number, op: (input: T) => Promise<unknown>) => {
    const half = inputs.length / 2;
    await measure(`${name} (warm-up)`, inputs.slice(0, half), concurrency, op);
    figures.push(await measure(name, inputs.slice(half), concurrency, op));
  };
  try {
    // Sign-in by code: codes sent beforehand (not measured), then VerifyOtp for each.
    const signInPhones = phones(2 * counts.signIns, 0);
    await measure("send_otp (setup)", signInPhones, 32, (phone) => call(a, AuthService.method.sendOtp, { phoneNumber: phone }));
    const refreshTokens: string[] = [];
    await warmedUp("verify_otp_sign_in", signInPhones, 32, async (phone) => {
      const response = await call(a, AuthService.method.verifyOtp, { phoneNumber: phone, code: sms.codes.get(phone)!, device });
      refreshTokens.push(response.tokens.refreshToken);
    });
    await warmedUp("refresh_token", refreshTokens, 32, (refreshToken) => call(a, AuthService.method.refreshToken, { refreshToken }));

    // Password login next to the raw argon2id verification it is built on, at the same parameters and concurrency.
    const password = "correct horse battery staple";
    const emails = Array.from({ length: 2 * counts.logins }, (_, i) => `bench.${i}@example.com`);
    // Enough in flight to keep argon2's thread pool busy while a login also waits on Postgres.
    const hashing = 8;
    await measure("register (setup)", emails, hashing, (email) => call(a, AuthService.method.register, { email, password, device }));
    await measure("verify_email (setup)", emails, 32, (email) => call(a, AuthService.method.verifyEmail, { email, code: sms.codes.get(email)! }));
    await warmedUp("login", emails, hashing, (email) => call(a, AuthService.method.login, { email, password, device }));
    const argonHash = await hash(password, { algorithm: 2, memoryCost: 19_456, timeCost: 2, parallelism: 1 });
    await warmedUp("argon2id_verify_raw", emails, hashing, () => verify(argonHash, password));

    // Revocation: sign out on A, then ask B until it refuses the token.
    const revocationPhones = phones(counts.revocations, 2 * counts.signIns);
    await measure("send_otp (setup)", revocationPhones, 32, (phone) => call(a, AuthService.method.sendOtp, { phoneNumber: phone }));
    const latencies: number[] = [];
    for (const phone of revocationPhones) {
      const { tokens } = await call(a, AuthService.method.verifyOtp, { phoneNumber: phone, code: sms.codes.get(phone)!, device });
      const headers = { authorization: `Bearer ${tokens.accessToken}` };
      await call(b, SessionService.method.getSession, {}, headers);
      const t0 = performance.now();
      await call(a, AuthService.method.logout, {}, headers);
      for (;;) {
        try {
          await call(b, SessionService.method.getSession, {}, headers);
        } catch {
          break;
        }
        if (performance.now() - t0 > 5000) throw new Error("revocation not seen within 5 s");
      }
      latencies.push(performance.now() - t0);
    }
    latencies.sort((x, y) => x - y);
    const at = (q: number) => Math.round(latencies[Math.floor(q * (latencies.length - 1))]! * 100) / 100;
    return { figures, revocation: { p50Ms: at(0.5), p99Ms: at(0.99), count: latencies.length } };
  } finally {
    await a.close();
    await b.close();
    sms.close();
  }
}
