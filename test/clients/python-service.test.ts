import { execFile, spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { expect } from "chai";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { grpcClient } from "../support/clients.js";
import { runAdmin } from "../support/platform.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { claimsOf } from "../support/service-accounts.js";
import { platformForSuite } from "../support/suite-platform.js";

// Debian's python3-grpcio, python3-protobuf and python3-jwt are importable only by Debian's own
// interpreter, which a pyenv or virtualenv earlier on PATH would hide (.ci/run installs them).
const python = process.env.PYTHON ?? "/usr/bin/python3";
const publicUrl = "https://auth.portcullis.test";

type Answer = Record<string, any>;

/** The Python service as its own process: one command a line on stdin, one JSON answer a line on stdout. */
class PythonService {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  private stderr = "";

  constructor(args: string[]) {
    this.child = spawn(python, ["test/clients/python/service.py", ...args]);
    this.child.stderr.on("data", (chunk) => (this.stderr += chunk));
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  async next(): Promise<Answer> {
    const line = await this.lines.next();
    if (line.done) throw new Error(`the Python service stopped:\n${this.stderr}`);
    return JSON.parse(line.value);
  }

  ask(...command: string[]): Promise<Answer> {
    this.child.stdin.write(`${command.join(" ")}\n`);
    return this.next();
  }

  async stop() {
    const exited = once(this.child, "exit");
    this.child.stdin.end();
    const [code] = await exited;
    expect(code, this.stderr).to.equal(0);
  }
}

/**
 * A service written in Python with Debian's gRPC, protobuf and PyJWT packages
 * and no generated code: it signs its own client assertion for a service
 * token, verifies user tokens against the JWKS, and asks IntrospectToken and
 * ExchangeToken over plain gRPC.
 */
describe("A Python service", () => {
  const sms = new SmsInbox();
  let workDir: string;
  let service: PythonService;
  let issued: Answer;

  // Registered before the platform's: the Python service stops while Portcullis still answers.
  after(async () => {
    await service?.stop();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });
  const platform = platformForSuite({ inboxes: [sms], env: { PUBLIC_URL: publicUrl } });

  const signIn = async () => (await signInByPhone(platform.running.grpcPort!, sms, newPhone()))!.tokens!.accessToken;

  before(async function () {
    // Two admin CLI processes, buf and a Python interpreter start here.
    this.timeout(120_000);
    workDir = await mkdtemp(join(tmpdir(), "portcullis-python-"));
    const descriptors = join(workDir, "portcullis.binpb");
    await promisify(execFile)("node_modules/.bin/buf", ["build", "-o", descriptors]);
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const publicJwk = join(workDir, "py-svc.jwk.json");
    const privatePem = join(workDir, "py-svc.pem");
    await writeFile(publicJwk, JSON.stringify(publicKey.export({ format: "jwk" })));
    await writeFile(privatePem, privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });

    await runAdmin(platform.stores, "service", "create", "py-svc", "--audience", "portcullis,orders");
    await runAdmin(platform.stores, "service", "key", "py-svc", publicJwk);

    service = new PythonService([
      "--target", `127.0.0.1:${platform.running.grpcPort}`,
      "--descriptors", descriptors,
      "--jwks-url", `http://127.0.0.1:${platform.running.httpPort}/.well-known/jwks.json`,
      "--client-id", "py-svc",
      "--private-key", privatePem,
      "--assertion-audience", `${publicUrl}/oauth2/token`,
    ]);
    issued = await service.next();
  });

  it("gets a short-lived service token for Portcullis with a client assertion it signed itself", () => {
    expect(issued).to.deep.include({ step: "issue", token_type: "Bearer", expires_in: 300 });
    expect(issued.claims).to.deep.include({ sub: "py-svc", svc: true, aud: "portcullis", iss: "portcullis" });
    expect(issued.claims.exp - issued.claims.iat).to.equal(300);
  });

  it("verifies a user's access token against the JWKS with PyJWT, by the algorithm the JWKS names", async () => {
    const userToken = await signIn();
    const verified = await service.ask("verify", userToken);
    expect(verified).to.deep.include({ step: "verify", verified: true, sub: claimsOf(userToken).sub, aud: "portcullis" });
    expect(verified.alg).to.be.oneOf(["ES256", "RS256", "EdDSA"]);

    const [header, , signature] = userToken.split(".");
    const raised = Buffer.from(JSON.stringify({ ...claimsOf(userToken), kyc_lvl: 3 })).toString("base64url");
    expect(await service.ask("verify", `${header}.${raised}.${signature}`), "claims changed under the signature").to.deep.include({
      verified: false,
      error: "InvalidSignatureError",
    });
  });

  it("introspects a user's token over gRPC: active, with its user and session", async () => {
    const userToken = await signIn();
    const claims = claimsOf(userToken);
    expect(await service.ask("introspect", userToken)).to.deep.equal({ step: "introspect", active: true, sub: claims.sub, sid: claims.sid, aud: "portcullis" });
  });

  it("exchanges a user's token for one bound to an audience it may reach, and is refused one it may not reach", async () => {
    const userToken = await signIn();
    const exchanged = await service.ask("exchange", userToken, "orders");
    expect(exchanged.code).to.equal("OK");
    expect(exchanged.claims).to.deep.include({ aud: "orders", act: { sub: "py-svc" } });

    expect(await service.ask("exchange", userToken, "payments")).to.deep.equal({ step: "exchange", code: "PERMISSION_DENIED", reason: "AUDIENCE_NOT_ALLOWED" });
  });

  it("sees a user's token turn inactive within a second of the user's Logout", async () => {
    const userToken = await signIn();
    expect((await service.ask("introspect", userToken)).active).to.equal(true);

    const auth = grpcClient(AuthService, platform.running.grpcPort!);
    try {
      expect((await auth.call("logout", {}, bearer(userToken))).error).to.equal(undefined);
    } finally {
      auth.close();
    }
    // The service polls for at most a second after Logout answered, and reports how long it waited.
    const watched = await service.ask("watch", userToken);
    expect(watched, "still active after the 1 s polling budget").to.include({ step: "watch", active: false });
    console.log(`      the Python service saw the Logout after ${watched.seconds} s, at introspection ${watched.polls}`);
  });
});
