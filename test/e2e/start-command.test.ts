import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import { promisify } from "node:util";
import { expect } from "chai";
import { consoleCode, exitBoundMs, launch, refuses, startBoundMs, type StartCommand } from "../support/start-command.js";

/** A Connect JSON call to the started gateway, as a new user would make it with curl. */
async function call(port: number, method: string, body: unknown, accessToken?: string) {
  const response = await fetch(`http://127.0.0.1:${port}/portcullis.v1.${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(accessToken ? { authorization: `Bearer ${accessToken}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: (await response.json()) as any };
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
  const verified = await call(port, "AuthService/VerifyEmail", { email, code: await consoleCode(command, "mail", email, /confirm your email/) });
  expect(verified.json).to.deep.equal({ email });
  const first = await call(port, "AuthService/Login", { email, password: "correct horse battery", device });
  expect(first.status, JSON.stringify(first.json)).to.equal(200);

  expect((await call(port, "AuthService/RequestPasswordReset", { email })).status).to.equal(200);
  const code = await consoleCode(command, "mail", email, /reset your password/);
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
      command = await launch(script);
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
