import { execFile } from "node:child_process";
import { Writable } from "node:stream";
import { promisify } from "node:util";
import { loadConfig } from "../../services/platform/config.js";
import { createLogger } from "../../services/platform/logger.js";
import { startServers, type Running } from "../../services/app/servers.js";
import { createTestDatabase, runId, testKeyEncryptionKey, testRedisUrl } from "./stores.js";

export type SharedStores = {
  DATABASE_URL: string;
  REDIS_URL: string;
  REDIS_KEY_PREFIX: string;
  KEY_ENCRYPTION_KEY: string;
};

let instances = 0;

/** A fresh database and Redis prefix that several instances can share. */
export async function sharedStores(): Promise<SharedStores> {
  return {
    DATABASE_URL: await createTestDatabase(),
    REDIS_URL: testRedisUrl,
    REDIS_KEY_PREFIX: `test:${runId}:${instances++}:`,
    KEY_ENCRYPTION_KEY: testKeyEncryptionKey(),
  };
}

/**
 * Starts real servers on free loopback ports, as `npm start` would with this
 * environment. Log lines go to `logLines` when given.
 */
export async function startPlatform(env: Record<string, string>, logLines?: string[]): Promise<Running> {
  const config = loadConfig({
    HOST: "127.0.0.1", GRPC_PORT: "0", HTTP_PORT: "0", METRICS_PORT: "0", LOG_LEVEL: logLines ? "info" : "silent", SMS_PROVIDER: "console", EMAIL_PROVIDER: "console", CAPTCHA_PROVIDER: "none",
    // Test numbers come from a few blocks of one country: only the tests of the SMS-pumping budgets set them low.
    OTP_ALLOWED_COUNTRIES: "*", OTP_COUNTRY_HOURLY_BUDGET: "1000000", OTP_PREFIX_HOURLY_BUDGET: "1000000",
    ...env,
  });
  const sink = logLines && new Writable({ write(chunk, _encoding, done) { logLines.push(String(chunk)); done(); } });
  return startServers(config, createLogger(config.logLevel, sink));
}

/** The admin tool, run as an operator would, as its own process against `env`'s stores. */
export function runAdmin(env: Record<string, string>, ...args: string[]) {
  return promisify(execFile)("node_modules/.bin/tsx", ["services/admin/cli.ts", ...args], {
    env: { ...process.env, SMS_PROVIDER: "console", LOG_LEVEL: "silent", ...env },
  });
}

/** A user token straight from the key ring, for Portcullis itself or the `audience` named (as ExchangeToken would bind it). */
export function mintUserToken(running: Running, claims: { kycLevel?: number; permissions?: string[]; subject?: string; audience?: string } = {}) {
  return running.app!.tokens.issue({
    kind: "user",
    subject: claims.subject ?? crypto.randomUUID(),
    sessionId: crypto.randomUUID(),
    sessionExpiresAt: 0,
    deviceId: "test-device",
    kycLevel: claims.kycLevel ?? 0,
    kycStatus: "",
    permissions: claims.permissions ?? [],
    amr: ["otp"],
  }, { audience: claims.audience });
}
