import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWK } from "jose";
import pg from "pg";
import { serviceAccountStore } from "../../services/clients/store.js";
import type { Sql } from "../../services/platform/database.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { AdminService, ServiceCredentialKind } from "../../gen/portcullis/v1/admin_service_pb.js";
import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";
import { connectCall, detailOf, fieldsOf, grpcErrorDetails } from "../support/clients.js";
import { runAdmin } from "../support/platform.js";
import { expectNoSecretLeaked } from "../support/secrets.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

const publicUrl = "https://auth.example.test";
const tokenEndpoint = `${publicUrl}/oauth2/token`;
const issuer = "portcullis";

interface Key {
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  kid: string;
}

async function newKey(alg: "ES256" | "EdDSA" | "PS256"): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg === "EdDSA" && { crv: "Ed25519" }) });
  const publicJwk = await exportJWK(publicKey);
  return { alg, privateKey, publicJwk, kid: await calculateJwkThumbprint(publicJwk) };
}

/** A client assertion as a service signs one (RFC 7523): 60 seconds to live unless `claims` say otherwise. */
function assertionFor(clientId: string, key: Key, options: { kid?: boolean; aud?: string | string[]; claims?: Record<string, unknown> } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: clientId, sub: clientId, aud: options.aud ?? tokenEndpoint, jti: randomUUID(), iat: now, exp: now + 60, ...options.claims })
    .setProtectedHeader({ alg: key.alg, ...(options.kid !== false && { kid: key.kid }) })
    .sign(key.privateKey);
}

const errorInfoOf = (error: grpc.ServiceError) => detailOf(grpcErrorDetails(error), ErrorInfoSchema);

/**
 * Service accounts: made with the command-line tool or AdminService (by an
 * operator holding service.admin), given public keys and client secrets, and
 * proving themselves to IssueServiceToken through both doors. Every failed
 * proof answers alike; the audit log says why.
 */
describe("Service accounts and IssueServiceToken", () => {
  const sms = new SmsInbox();
  /** Every client secret and assertion handed out, none of which may reach a log line or an audit row. */
  const handedOut: string[] = [];
  const platform = platformForSuite({
    inboxes: [sms],
    logs: true,
    env: {
      PUBLIC_URL: publicUrl,
      RATE_LIMITS: "otp_send_ip=1000/3600,otp_verify_ip=1000/3600,service_token_client=1000/60,service_token_ip=10000/60",
    },
  });
  let operatorToken: string;
  const admin = platform.client(AdminService);
  const tokenService = platform.client(TokenService);
  let workDir: string;
  let jwks: ReturnType<typeof createLocalJWKSet>;

  const asOperator = () => bearer(operatorToken);
  const osActor = `os:${userInfo().username}`;

  async function createAccount(audiences = ["orders"], permissions = ["orders.read"]) {
    const name = `svc-${randomUUID().slice(0, 8)}`;
    const created = await admin.call("createServiceAccount", { name, audiences, permissions }, asOperator());
    expect(created.error).to.equal(undefined);
    return name;
  }
  async function addSecret(name: string) {
    const added = await admin.call("addServiceCredential", { name, generateClientSecret: true }, asOperator());
    expect(added.error).to.equal(undefined);
    handedOut.push(added.response!.clientSecret);
    return { secret: added.response!.clientSecret, credentialId: added.response!.credential!.credentialId };
  }
  async function addKey(name: string, key: Key) {
    const added = await admin.call("addServiceCredential", { name, publicKeyJwk: JSON.stringify(key.publicJwk) }, asOperator());
    expect(added.error).to.equal(undefined);
    return added.response!.credential!.credentialId;
  }
  const issueWithSecret = (clientId: string, clientSecret: string, audience = "orders") => tokenService.call("issueServiceToken", { clientId, clientSecret, audience });
  async function issueWithAssertion(clientId: string, assertion: string, audience = "orders") {
    handedOut.push(assertion);
    return tokenService.call("issueServiceToken", { clientId, clientAssertion: assertion, audience });
  }
  /** The reasons the audit log gives for the account's token requests, oldest first. */
  async function issueAudit(clientId: string) {
    const { rows } = await platform.db.query("select outcome, detail from audit_event where event = 'service_token.issue' and detail->>'client_id' = $1 order by id", [clientId]);
    return rows.map((row) => `${row.outcome}:${row.detail.reason ?? row.detail.method}`);
  }

  /**
   * Makes `change` in a transaction of the test's own, and commits it only
   * once `issue` waits on its lock (or has finished without doing so): the
   * request began before the change, and ends after it.
   */
  async function changedWhileIssuing<T>(change: (sql: Sql) => Promise<unknown>, issue: () => Promise<T>): Promise<T> {
    const holder = new pg.Client({ connectionString: platform.stores.DATABASE_URL });
    await holder.connect();
    try {
      const sql: Sql = { query: async (text, params) => (await holder.query(text, params as unknown[])).rows };
      await holder.query("begin");
      await change(sql);
      const [{ pid }] = (await holder.query("select pg_backend_pid() as pid")).rows;
      let settled = false;
      const issuing = issue().finally(() => (settled = true));
      const blocked = async () => (await platform.db.query("select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid))", [pid])).rowCount! > 0;
      while (!settled && !(await blocked())) await sleep(10);
      await holder.query("commit");
      return await issuing;
    } finally {
      await holder.end();
    }
  }

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), "service-accounts-"));
    const operatorPhone = newPhone();
    await signInByPhone(platform.running.grpcPort!, sms, operatorPhone, "Operator");
    expect((await runAdmin(platform.stores, "grant", operatorPhone, "service.admin")).stdout).to.match(/granted service\.admin/);
    operatorToken = (await signInByPhone(platform.running.grpcPort!, sms, operatorPhone, "Operator"))!.tokens!.accessToken;
    jwks = createLocalJWKSet(await (await fetch(`http://127.0.0.1:${platform.running.httpPort}/.well-known/jwks.json`)).json());
  });
  after(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  describe("the command-line tool", function () {
    // Each run of the tool is a process of its own, compiling TypeScript as it starts.
    this.timeout(180_000);

    const cli = (...args: string[]) =>
      runAdmin(platform.stores, "service", ...args).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (error: { code: number; stdout: string; stderr: string }) => error,
      );

    it("creates the first account, gives it a key and a secret, lists, revokes and disables, audited with the operating-system user", async () => {
      const created = await cli("create", "billing", "--audience", "orders,payments", "--permission", "orders.read,payments.refund");
      expect(created.stdout).to.match(/created service account billing for audiences orders, payments; permissions: orders\.read, payments\.refund/);
      const taken = await cli("create", "billing", "--audience", "orders");
      expect(taken.code).to.equal(1);
      expect(taken.stderr).to.match(/already exists/);

      const key = await newKey("ES256");
      const jwkFile = join(workDir, "billing.jwk");
      await writeFile(jwkFile, JSON.stringify(key.publicJwk));
      expect((await cli("key", "billing", jwkFile)).stdout).to.contain(`added public key ${key.kid} to billing`);
      const secretOutput = (await cli("secret", "billing")).stdout;
      const secretId = /credential ([0-9a-f-]{36})/.exec(secretOutput)![1]!;
      const secret = secretOutput.trim().split("\n").at(-1)!;
      handedOut.push(secret);
      expect(secret).to.match(/^pcs_[A-Za-z0-9_-]{43}$/);

      expect((await issueWithSecret("billing", secret, "payments")).error).to.equal(undefined);
      expect((await issueWithAssertion("billing", await assertionFor("billing", key))).error).to.equal(undefined);

      const listed = (await cli("list")).stdout;
      expect(listed).to.match(/^billing: audiences orders, payments; permissions orders\.read, payments\.refund$/m);
      expect(listed).to.contain(`public key ${key.kid}`).and.contain(`${secretId}  client secret`).and.not.contain(secret);
      expect(listed.match(/last used/g)).to.have.length(2);

      expect((await cli("revoke-credential", "billing", secretId)).stdout).to.contain(`revoked credential ${secretId} of billing`);
      expect(errorInfoOf((await issueWithSecret("billing", secret, "payments")).error!)?.reason).to.equal("INVALID_CLIENT");
      expect((await cli("disable", "billing")).stdout).to.match(/disabled service account billing/);
      expect(errorInfoOf((await issueWithAssertion("billing", await assertionFor("billing", key))).error!)?.reason).to.equal("INVALID_CLIENT");

      const { rows } = await platform.db.query("select event, detail from audit_event where detail->>'client_id' = 'billing' and detail ? 'actor' order by id");
      expect(rows.map((row) => row.event)).to.deep.equal([
        "service_account.create",
        "service_credential.add",
        "service_credential.add",
        "service_credential.revoke",
        "service_account.disable",
      ]);
      expect(rows.every((row) => row.detail.actor === osActor)).to.equal(true);
      expect(rows[1].detail).to.include({ kind: "public_key", key_id: key.kid });
    });

    it("checks its arguments by the contract's rules, and refuses a private key", async () => {
      const usage = await cli("frobnicate");
      expect(usage.code).to.equal(2);
      expect(usage.stderr).to.contain("service create <name> --audience <a,b>");
      expect((await cli("create", "Bad_Name", "--audience", "orders")).stderr).to.match(/^name: /m);
      expect((await cli("create", "no-audience")).stderr).to.match(/^audiences: /m);
      const uuidName = await cli("create", `a${randomUUID().slice(1)}`, "--audience", "orders");
      expect(uuidName.code).to.equal(1);
      expect(uuidName.stderr).to.match(/name: must not read as a UUID/);
      expect((await cli("create", "portcullis", "--audience", "orders")).stderr).to.match(/name: is Portcullis's own issuer or audience/);
      expect((await cli("revoke-credential", "orders", "not-a-uuid")).stderr).to.match(/^credential_id: /m);

      const privateFile = join(workDir, "private.jwk");
      await writeFile(privateFile, JSON.stringify(await exportJWK((await generateKeyPair("ES256", { extractable: true })).privateKey)));
      const refused = await cli("key", await createAccount(), privateFile);
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.match(/public_key_jwk: holds a private or symmetric key/);
    });
  });

  describe("AdminService", () => {
    it("needs service.admin, through both doors", async () => {
      const user = (await signInByPhone(platform.running.grpcPort!, sms, newPhone()))!;
      const refused = await admin.call("createServiceAccount", { name: "sneaky", audiences: ["orders"] }, bearer(user.tokens!.accessToken));
      expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      const viaGateway = await connectCall(platform.running.httpPort!, "/portcullis.v1.AdminService/ListServiceAccounts", {}, bearer(user.tokens!.accessToken));
      expect(viaGateway.status).to.equal(403);
    });

    it("creates an account once, and lists accounts by name a page at a time with their active credentials, never a secret", async () => {
      const names = [await createAccount(), await createAccount(), await createAccount()];
      const taken = await admin.call("createServiceAccount", { name: names[0], audiences: ["orders"] }, asOperator());
      expect(taken.error?.code).to.equal(grpc.status.ALREADY_EXISTS);
      const { secret, credentialId } = await addSecret(names[0]!);
      const key = await newKey("EdDSA");
      await addKey(names[0]!, key);

      const seen: string[] = [];
      let pageToken = "";
      do {
        const page = await admin.call("listServiceAccounts", { pageSize: 2, pageToken }, asOperator());
        expect(page.error).to.equal(undefined);
        expect(page.response!.serviceAccounts.length).to.be.at.most(2);
        seen.push(...page.response!.serviceAccounts.map((account) => account.name));
        const first = page.response!.serviceAccounts.find((account) => account.name === names[0]);
        if (first) {
          expect(first.audiences).to.deep.equal(["orders"]);
          expect(first.permissions).to.deep.equal(["orders.read"]);
          expect(first.credentials.map((c) => [c.credentialId === credentialId, c.kind, c.keyId])).to.deep.equal([
            [true, ServiceCredentialKind.CLIENT_SECRET, ""],
            [false, ServiceCredentialKind.PUBLIC_KEY, key.kid],
          ]);
        }
        pageToken = page.response!.nextPageToken;
      } while (pageToken);
      expect(seen).to.deep.equal([...seen].sort());
      expect(seen).to.include.members(names);

      const viaGateway = await connectCall(platform.running.httpPort!, "/portcullis.v1.AdminService/ListServiceAccounts", {}, asOperator());
      expect(viaGateway.status).to.equal(200);
      expect(viaGateway.text).not.to.contain(secret);

      const badToken = await admin.call("listServiceAccounts", { pageToken: Buffer.from("Not A Name").toString("base64url") }, asOperator());
      expect(badToken.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(fieldsOf(badToken.error!)).to.deep.equal(["page_token"]);
    });

    it("refuses a name that reads as a UUID, as a user's id does, or that is Portcullis's own issuer or audience", async () => {
      const lookalike = `b${randomUUID().slice(1)}`;
      for (const name of [lookalike, lookalike.replaceAll("-", ""), "portcullis"]) {
        const refused = await admin.call("createServiceAccount", { name, audiences: ["orders"] }, asOperator());
        expect(refused.error?.code, name).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(refused.error!), name).to.deep.equal(["name"]);
      }
      const viaGateway = await connectCall(platform.running.httpPort!, "/portcullis.v1.AdminService/CreateServiceAccount", { name: "portcullis", audiences: ["orders"] }, asOperator());
      expect([viaGateway.status, viaGateway.json.code]).to.deep.equal([400, "invalid_argument"]);
      const { rows } = await platform.db.query("select 1 from service_account where name = any($1)", [[lookalike, lookalike.replaceAll("-", ""), "portcullis"]]);
      expect(rows).to.have.length(0);
    });

    it("takes only EC P-256, RSA (2048 bits or more) and Ed25519 public keys", async () => {
      const name = await createAccount();
      const privateJwk = await exportJWK((await generateKeyPair("ES256", { extractable: true })).privateKey);
      const p384 = await exportJWK((await generateKeyPair("ES384", { extractable: true })).publicKey);
      for (const jwk of [privateJwk, p384, { kty: "oct", k: "c2VjcmV0" }]) {
        const refused = await admin.call("addServiceCredential", { name, publicKeyJwk: JSON.stringify(jwk) }, asOperator());
        expect(refused.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
        expect(fieldsOf(refused.error!)).to.deep.equal(["public_key_jwk"]);
      }
      const rsa = await newKey("PS256");
      await addKey(name, rsa);
      const again = await admin.call("addServiceCredential", { name, publicKeyJwk: JSON.stringify(rsa.publicJwk) }, asOperator());
      expect(again.error?.code).to.equal(grpc.status.ALREADY_EXISTS);
      expect((await issueWithAssertion(name, await assertionFor(name, rsa))).error).to.equal(undefined);
    });

    it("answers NOT_FOUND for an account or credential that is not there, and audits each change with the operator", async () => {
      const missing = await admin.call("disableServiceAccount", { name: "no-such-service" }, asOperator());
      expect(missing.error?.code).to.equal(grpc.status.NOT_FOUND);
      const name = await createAccount();
      const noCredential = await admin.call("revokeServiceCredential", { name, credentialId: randomUUID() }, asOperator());
      expect(noCredential.error?.code).to.equal(grpc.status.NOT_FOUND);
      const { credentialId } = await addSecret(name);
      expect((await admin.call("revokeServiceCredential", { name, credentialId }, asOperator())).error).to.equal(undefined);
      expect((await admin.call("disableServiceAccount", { name }, asOperator())).error).to.equal(undefined);
      const operatorId = JSON.parse(Buffer.from(operatorToken.split(".")[1]!, "base64url").toString()).sub;
      const { rows } = await platform.db.query("select event, detail from audit_event where detail->>'client_id' = $1 order by id", [name]);
      expect(rows.map((row) => row.event)).to.deep.equal(["service_account.create", "service_credential.add", "service_credential.revoke", "service_account.disable"]);
      expect(rows.every((row) => row.detail.actor === operatorId)).to.equal(true);
    });
  });

  describe("IssueServiceToken", () => {
    it("issues a service token for a client secret: svc, the account as sub, the audience, its permissions, five minutes", async () => {
      const name = await createAccount(["orders", "portcullis"], ["orders.read", "orders.write"]);
      const { secret } = await addSecret(name);
      const issued = await issueWithSecret(name, secret);
      expect(issued.error).to.equal(undefined);
      const { accessToken, tokenType, expiresIn, expireTime } = issued.response!;
      handedOut.push(accessToken);
      expect([tokenType, expiresIn]).to.deep.equal(["Bearer", 300]);
      const { payload, protectedHeader } = await jwtVerify(accessToken, jwks, { issuer, audience: "orders", typ: "at+jwt" });
      expect(protectedHeader.typ).to.equal("at+jwt");
      expect(payload).to.include({ svc: true, sub: name, aud: "orders" });
      expect(payload.perm).to.deep.equal(["orders.read", "orders.write"]);
      expect(payload.exp! - payload.iat!).to.equal(300);
      expect(Number(expireTime!.seconds)).to.equal(payload.exp);
      expect(payload).not.to.have.any.keys("sid", "did", "act");
      expect(await issueAudit(name)).to.deep.equal(["success:client_secret"]);
      // The token's id, so the audit log ties the token's later use to this issuance.
      const { rows } = await platform.db.query("select detail from audit_event where event = 'service_token.issue' and detail->>'client_id' = $1", [name]);
      expect(rows[0].detail.jti).to.equal(payload.jti);
    });

    it("issues one for a client assertion signed with an ES256 key (named by kid) or an Ed25519 key (found without one)", async () => {
      const name = await createAccount();
      const es256 = await newKey("ES256");
      const ed25519 = await newKey("EdDSA");
      await addKey(name, es256);
      await addKey(name, ed25519);
      const byKid = await issueWithAssertion(name, await assertionFor(name, es256));
      expect(byKid.error).to.equal(undefined);
      const withoutKid = await issueWithAssertion(name, await assertionFor(name, ed25519, { kid: false, aud: [issuer] }));
      expect(withoutKid.error).to.equal(undefined);
      const { payload } = await jwtVerify(withoutKid.response!.accessToken, jwks, { issuer, audience: "orders" });
      expect(payload).to.include({ svc: true, sub: name });
      expect(await issueAudit(name)).to.deep.equal(["success:private_key_jwt", "success:private_key_jwt"]);
    });

    it("answers every failed proof with the same INVALID_CLIENT, and audits which it was", async () => {
      const name = await createAccount();
      const key = await newKey("ES256");
      const otherKey = await newKey("ES256");
      await addKey(name, key);
      const { secret, credentialId } = await addSecret(name);
      const now = Math.floor(Date.now() / 1000);
      const replayed = await assertionFor(name, key);
      expect((await issueWithAssertion(name, replayed)).error).to.equal(undefined);

      const disabled = await createAccount();
      const disabledSecret = (await addSecret(disabled)).secret;
      await admin.call("disableServiceAccount", { name: disabled }, asOperator());

      const failures = [
        await issueWithSecret(name, "pcs_" + "A".repeat(43)),
        await issueWithSecret("no-such-service", secret),
        await issueWithSecret(disabled, disabledSecret),
        await issueWithAssertion(name, await assertionFor(name, key, { aud: "https://elsewhere.example/oauth2/token" })),
        await issueWithAssertion(name, await assertionFor(name, key, { claims: { iat: now - 600, exp: now - 300 } })),
        await issueWithAssertion(name, await assertionFor(name, key, { claims: { exp: now + 3600 } })),
        await issueWithAssertion(name, await assertionFor(name, key, { claims: { iss: "someone-else" } })),
        await issueWithAssertion(name, await assertionFor(name, { ...otherKey, kid: key.kid })),
        await issueWithAssertion(name, replayed),
        await issueWithAssertion(name, "not.a.jwt"),
      ];
      await admin.call("revokeServiceCredential", { name, credentialId }, asOperator());
      failures.push(await issueWithSecret(name, secret));

      for (const { error } of failures) {
        expect(error?.code).to.equal(grpc.status.UNAUTHENTICATED);
        expect(error!.details).to.equal("client authentication failed");
        expect(errorInfoOf(error!)).to.include({ reason: "INVALID_CLIENT", domain: "portcullis.dev" });
        expect(grpcErrorDetails(error!)).to.deep.equal(grpcErrorDetails(failures[0]!.error!));
      }
      expect(await issueAudit(name)).to.deep.equal([
        "success:private_key_jwt",
        "failure:wrong_secret",
        "failure:assertion_claim_aud",
        "failure:assertion_expired",
        "failure:assertion_lifetime",
        "failure:assertion_claim_iss",
        "failure:assertion_signature",
        "failure:assertion_replayed",
        "failure:assertion_malformed",
        "failure:no_active_credential",
      ]);
      expect(await issueAudit("no-such-service")).to.deep.equal(["failure:unknown_client"]);
      expect(await issueAudit(disabled)).to.deep.equal(["failure:account_disabled"]);
    });

    it("refuses a credential revoked while a request that proved itself with it is under way", async () => {
      const name = await createAccount();
      const { secret, credentialId } = await addSecret(name);
      const issued = await changedWhileIssuing((sql) => serviceAccountStore.revokeCredential(sql, name, credentialId), () => issueWithSecret(name, secret));
      expect(errorInfoOf(issued.error!)?.reason).to.equal("INVALID_CLIENT");
      expect(await issueAudit(name)).to.deep.equal(["failure:credential_revoked"]);
    });

    it("refuses an account disabled while a request is under way", async () => {
      const name = await createAccount();
      const { secret } = await addSecret(name);
      const issued = await changedWhileIssuing((sql) => serviceAccountStore.disable(sql, name), () => issueWithSecret(name, secret));
      expect(errorInfoOf(issued.error!)?.reason).to.equal("INVALID_CLIENT");
      expect(await issueAudit(name)).to.deep.equal(["failure:account_disabled"]);
    });

    it("refuses an audience the account may not call with AUDIENCE_NOT_ALLOWED, once the account is proven", async () => {
      const name = await createAccount(["orders"]);
      const { secret } = await addSecret(name);
      const refused = await issueWithSecret(name, secret, "payments");
      expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(errorInfoOf(refused.error!)).to.include({ reason: "AUDIENCE_NOT_ALLOWED" });
      const stranger = await issueWithSecret(name, "pcs_" + "B".repeat(43), "payments");
      expect(errorInfoOf(stranger.error!)?.reason).to.equal("INVALID_CLIENT");
      expect(await issueAudit(name)).to.deep.equal(["denied:audience_not_allowed", "failure:wrong_secret"]);
    });

    it("rotates without downtime: two credentials work at once, a third is refused until the old one is revoked", async () => {
      const name = await createAccount();
      const old = await newKey("ES256");
      const next = await newKey("ES256");
      const oldId = await addKey(name, old);
      await addKey(name, next);
      expect((await issueWithAssertion(name, await assertionFor(name, old))).error).to.equal(undefined);
      expect((await issueWithAssertion(name, await assertionFor(name, next, { kid: false }))).error).to.equal(undefined);

      const third = await admin.call("addServiceCredential", { name, generateClientSecret: true }, asOperator());
      expect(third.error?.code).to.equal(grpc.status.FAILED_PRECONDITION);
      expect(third.error!.details).to.match(/revoke a credential first/);

      expect((await admin.call("revokeServiceCredential", { name, credentialId: oldId }, asOperator())).error).to.equal(undefined);
      expect(errorInfoOf((await issueWithAssertion(name, await assertionFor(name, old))).error!)?.reason).to.equal("INVALID_CLIENT");
      expect(errorInfoOf((await issueWithAssertion(name, await assertionFor(name, old, { kid: false }))).error!)?.reason).to.equal("INVALID_CLIENT");
      expect((await issueWithAssertion(name, await assertionFor(name, next))).error).to.equal(undefined);
      await addSecret(name);
    });

    it("answers alike through the Connect gateway", async () => {
      const name = await createAccount();
      const { secret } = await addSecret(name);
      const path = "/portcullis.v1.TokenService/IssueServiceToken";
      const issued = await connectCall(platform.running.httpPort!, path, { clientId: name, clientSecret: secret, audience: "orders" });
      expect(issued.status).to.equal(200);
      expect(issued.json).to.include({ tokenType: "Bearer", expiresIn: 300 });
      handedOut.push(issued.json.accessToken);
      expect((await jwtVerify(issued.json.accessToken, jwks, { issuer, audience: "orders" })).payload.sub).to.equal(name);

      const key = await newKey("ES256");
      await addKey(name, key);
      const assertion = await assertionFor(name, key);
      handedOut.push(assertion);
      expect((await connectCall(platform.running.httpPort!, path, { clientId: name, clientAssertion: assertion, audience: "orders" })).status).to.equal(200);

      for (const body of [
        { clientId: name, clientSecret: "pcs_wrong", audience: "orders" },
        { clientId: name, clientAssertion: assertion, audience: "orders" },
      ]) {
        const refused = await connectCall(platform.running.httpPort!, path, body);
        expect(refused.status).to.equal(401);
        expect(refused.json).to.include({ code: "unauthenticated", message: "client authentication failed" });
        const info = fromBinary(ErrorInfoSchema, Buffer.from(refused.json.details[0].value, "base64"));
        expect(info.reason).to.equal("INVALID_CLIENT");
      }
      const neither = await connectCall(platform.running.httpPort!, path, { clientId: name, audience: "orders" });
      expect([neither.status, neither.json.code]).to.deep.equal([400, "invalid_argument"]);
    });

    it("forgets a used assertion's jti once the assertion has expired, and only then", async () => {
      const name = await createAccount();
      const key = await newKey("ES256");
      await addKey(name, key);
      await issueWithAssertion(name, await assertionFor(name, key));
      await issueWithAssertion(name, await assertionFor(name, key));
      const used = () => platform.db.query("select jti from client_assertion_use where service_name = $1", [name]).then(({ rows }) => rows.map((row) => row.jti));
      const [expired, live] = await used();
      // As it will be once its exp has passed.
      await platform.db.query("update client_assertion_use set expire_time = now() - interval '1 second' where jti = $1", [expired]);
      expect((await platform.running.app!.cleanup.run()).clientAssertions).to.be.at.least(1);
      expect(await used()).to.deep.equal([live]);
    });

    it("never lets a client secret, an assertion or a token reach a log line or an audit row", async () => {
      expect(handedOut.length).to.be.greaterThan(10);
      await expectNoSecretLeaked(platform.db, platform.logLines, handedOut);
    });
  });
});
