import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import type { Running } from "../../services/app/servers.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { grpcClient } from "../support/clients.js";
import { runAdmin, startPlatform } from "../support/platform.js";
import { expectNoSecretLeaked } from "../support/secrets.js";
import { claimsOf, createServiceAccount } from "../support/service-accounts.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

const publicUrl = "https://auth.portcullis.test";
const tokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange";
const accessTokenType = "urn:ietf:params:oauth:token-type:access_token";
const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/** RFC 6749 §2.3.1: id and secret form-encoded, then Basic. */
const basic = (id: string, secret: string) => ({
  authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`,
});

/** A form POST, as a stock OAuth client library sends it. */
async function postForm(port: number, path: string, form: Record<string, string> | string, headers: Record<string, string> = {}) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: typeof form === "string" ? form : new URLSearchParams(form),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, json: text ? JSON.parse(text) : undefined };
}

/**
 * The OAuth 2.0 endpoints on the gateway, called the way stock OAuth client
 * libraries call them: form bodies, client_secret_basic, client_secret_post
 * and private_key_jwt, the token-exchange grant, introspection and the
 * authorization-server metadata.
 */
describe("OAuth 2.0 endpoints on the gateway", () => {
  const sms = new SmsInbox();
  const secrets: string[] = [];
  const platform = platformForSuite({
    inboxes: [sms],
    logs: true,
    env: {
      PUBLIC_URL: publicUrl,
      CORS_ORIGINS: "https://app.portcullis.test",
      RATE_LIMITS: "otp_send_ip=1000/3600,otp_verify_ip=1000/3600",
    },
  });
  let keyDir: string;
  let checkoutSecret: string;
  let reportsSecret: string;
  let ordersSecret: string;
  let inventoryKey: { privateKey: CryptoKey; kid: string };

  const token = (form: Record<string, string> | string, headers: Record<string, string> = {}, port = platform.running.httpPort!) =>
    postForm(port, "/oauth2/token", form, headers).then((answer) => {
      if (answer.json?.access_token) secrets.push(answer.json.access_token);
      return answer;
    });
  const introspect = (form: Record<string, string>, headers: Record<string, string> = {}, port = platform.running.httpPort!) =>
    postForm(port, "/oauth2/introspect", form, headers);
  const signIn = async () => {
    const { tokens } = await signInByPhone(platform.running.grpcPort!, sms, newPhone());
    secrets.push(tokens!.accessToken, tokens!.refreshToken);
    return tokens!.accessToken;
  };
  /** RFC 7523 client assertion for inventory, signed with its private key. */
  const assertion = async (claims: { audience?: string } = {}) => {
    const jwt = await new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: inventoryKey.kid })
      .setIssuer("inventory")
      .setSubject("inventory")
      .setAudience(claims.audience ?? `${publicUrl}/oauth2/token`)
      .setJti(randomUUID())
      .setIssuedAt()
      .setExpirationTime("60s")
      .sign(inventoryKey.privateKey);
    secrets.push(jwt);
    return jwt;
  };
  const expectOAuthError = (answer: { status: number; headers: Headers; json: any }, status: number, error: string) => {
    expect(answer.status, JSON.stringify(answer.json)).to.equal(status);
    expect(answer.json.error).to.equal(error);
    expect(answer.json.error_description).to.be.a("string").and.match(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/);
    expect(answer.headers.get("cache-control")).to.equal("no-store");
  };

  before(async function () {
    // The admin tool starts as its own process, a few seconds each time.
    this.timeout(90_000);
    const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    inventoryKey = { privateKey, kid: await calculateJwkThumbprint(publicJwk) };
    keyDir = await mkdtemp(join(tmpdir(), "portcullis-oauth-"));
    await writeFile(join(keyDir, "inventory.jwk"), JSON.stringify(publicJwk));
    [checkoutSecret, reportsSecret, , ordersSecret] = await Promise.all([
      createServiceAccount(platform.stores, "checkout", ["portcullis", "orders"]),
      // No "portcullis" among its audiences: it may not exchange or introspect through the token endpoint.
      createServiceAccount(platform.stores, "reports", ["orders"]),
      (async () => {
        await runAdmin(platform.stores, "service", "create", "inventory", "--audience", "orders");
        await runAdmin(platform.stores, "service", "key", "inventory", join(keyDir, "inventory.jwk"));
      })(),
      createServiceAccount(platform.stores, "orders", ["portcullis", "payments"]),
    ]);
    secrets.push(checkoutSecret, reportsSecret, ordersSecret);
  });
  after(async () => {
    await rm(keyDir, { recursive: true, force: true });
  });

  describe("GET /.well-known/oauth-authorization-server", () => {
    it("describes the endpoints, grants and client authentication methods (RFC 8414)", async () => {
      const response = await fetch(`http://127.0.0.1:${platform.running.httpPort}/.well-known/oauth-authorization-server`);
      expect(response.status).to.equal(200);
      expect(response.headers.get("content-type")).to.equal("application/json");
      expect(await response.json()).to.deep.equal({
        issuer: "portcullis",
        token_endpoint: `${publicUrl}/oauth2/token`,
        introspection_endpoint: `${publicUrl}/oauth2/introspect`,
        jwks_uri: `${publicUrl}/.well-known/jwks.json`,
        grant_types_supported: ["client_credentials", tokenExchange],
        response_types_supported: [],
        token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        token_endpoint_auth_signing_alg_values_supported: ["ES256", "RS256", "PS256", "EdDSA"],
        introspection_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        introspection_endpoint_auth_signing_alg_values_supported: ["ES256", "RS256", "PS256", "EdDSA"],
      });
    });
  });

  describe("POST /oauth2/token, grant_type=client_credentials", () => {
    it("issues a service token to a client authenticated with HTTP Basic (client_secret_basic)", async () => {
      const answer = await token({ grant_type: "client_credentials", audience: "orders" }, basic("checkout", checkoutSecret));
      expect(answer.status).to.equal(200);
      expect(answer.headers.get("cache-control")).to.equal("no-store");
      expect(answer.headers.get("pragma")).to.equal("no-cache");
      expect(answer.json).to.have.keys("access_token", "token_type", "expires_in");
      expect(answer.json).to.include({ token_type: "Bearer", expires_in: 300 });
      expect(claimsOf(answer.json.access_token)).to.include({ sub: "checkout", aud: "orders", svc: true });
    });

    it("takes the secret in the form (client_secret_post) and RFC 8707 resource for the audience", async () => {
      const answer = await token({ grant_type: "client_credentials", client_id: "checkout", client_secret: checkoutSecret, resource: "orders" });
      expect(answer.status).to.equal(200);
      expect(claimsOf(answer.json.access_token)).to.include({ sub: "checkout", aud: "orders" });
    });

    it("takes a client assertion signed with the service's key (private_key_jwt), the client named by its sub", async () => {
      const answer = await token({ grant_type: "client_credentials", client_assertion_type: jwtBearer, client_assertion: await assertion(), audience: "orders" });
      expect(answer.status, JSON.stringify(answer.json)).to.equal(200);
      expect(claimsOf(answer.json.access_token)).to.include({ sub: "inventory", aud: "orders" });
    });

    it("answers invalid_client (401, challenged in Basic when Basic was used) for a wrong secret, no authentication or a bad assertion", async () => {
      const wrongBasic = await token({ grant_type: "client_credentials", audience: "orders" }, basic("checkout", `${checkoutSecret}x`));
      expectOAuthError(wrongBasic, 401, "invalid_client");
      expect(wrongBasic.headers.get("www-authenticate")).to.equal('Basic realm="portcullis"');

      expectOAuthError(await token({ grant_type: "client_credentials", client_id: "checkout", client_secret: "nope", audience: "orders" }), 401, "invalid_client");
      expectOAuthError(await token({ grant_type: "client_credentials", client_id: "nobody", client_secret: "nope", audience: "orders" }), 401, "invalid_client");
      const none = await token({ grant_type: "client_credentials", audience: "orders" });
      expectOAuthError(none, 401, "invalid_client");
      const foreign = await assertion({ audience: "https://elsewhere.test/token" });
      expectOAuthError(await token({ grant_type: "client_credentials", client_assertion_type: jwtBearer, client_assertion: foreign, audience: "orders" }), 401, "invalid_client");
    });

    it("answers invalid_target for an audience the client may not reach", async () => {
      expectOAuthError(await token({ grant_type: "client_credentials", audience: "payments" }, basic("checkout", checkoutSecret)), 400, "invalid_target");
      expectOAuthError(await token({ grant_type: "client_credentials", audience: "https://not-a-name" }, basic("checkout", checkoutSecret)), 400, "invalid_target");
      expectOAuthError(await token({ grant_type: "client_credentials", audience: "orders", resource: "payments" }, basic("checkout", checkoutSecret)), 400, "invalid_target");
    });

    it("answers RFC 6749 errors for a bad grant type, missing or repeated parameters and more than one client authentication", async () => {
      const client = basic("checkout", checkoutSecret);
      expectOAuthError(await token({ grant_type: "password", username: "a", password: "b" }, client), 400, "unsupported_grant_type");
      expectOAuthError(await token({ audience: "orders" }, client), 400, "invalid_request");
      expectOAuthError(await token({ grant_type: "client_credentials" }, client), 400, "invalid_request");
      expectOAuthError(await token("grant_type=client_credentials&audience=orders&audience=orders", client), 400, "invalid_request");
      expectOAuthError(await token({ grant_type: "client_credentials", audience: "orders", client_secret: checkoutSecret }, client), 400, "invalid_request");
      expectOAuthError(await token({ grant_type: "client_credentials", client_assertion: await assertion(), audience: "orders" }), 400, "invalid_request");

      const json = await postForm(platform.running.httpPort!, "/oauth2/token", "", { ...client, "content-type": "application/json" });
      expectOAuthError(json, 400, "invalid_request");
      const get = await fetch(`http://127.0.0.1:${platform.running.httpPort}/oauth2/token`);
      expect(get.status).to.equal(405);
      expect(get.headers.get("allow")).to.equal("POST");
    });

    it("holds the body to the gateway's size limit", async () => {
      const answer = await token({ grant_type: "client_credentials", audience: "orders", padding: "x".repeat(70 * 1024) }, basic("checkout", checkoutSecret));
      expectOAuthError(answer, 413, "invalid_request");

      // Sent in chunks, without a Content-Length to refuse it by.
      const chunk = new TextEncoder().encode(`padding=${"x".repeat(16 * 1024)}&`);
      const body = new ReadableStream({
        start(controller) {
          for (let i = 0; i < 5; i++) controller.enqueue(chunk);
          controller.close();
        },
      });
      const response = await fetch(`http://127.0.0.1:${platform.running.httpPort}/oauth2/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", ...basic("checkout", checkoutSecret) },
        body,
        duplex: "half",
      } as RequestInit);
      expect(response.status).to.equal(413);
      expect((await response.json()).error).to.equal("invalid_request");
    });

    it("sends no CORS headers: the endpoints are for servers, not pages", async () => {
      const origin = { origin: "https://app.portcullis.test" };
      const answer = await token({ grant_type: "client_credentials", audience: "orders" }, { ...basic("checkout", checkoutSecret), ...origin });
      expect(answer.status).to.equal(200);
      expect(answer.headers.get("access-control-allow-origin")).to.equal(null);
      const preflight = await fetch(`http://127.0.0.1:${platform.running.httpPort}/oauth2/token`, {
        method: "OPTIONS",
        headers: { ...origin, "access-control-request-method": "POST" },
      });
      expect(preflight.headers.get("access-control-allow-origin")).to.equal(null);
    });
  });

  describe("POST /oauth2/token, grant_type=token-exchange", () => {
    const exchangeForm = (subjectToken: string, audience = "orders") => ({
      grant_type: tokenExchange,
      subject_token: subjectToken,
      subject_token_type: accessTokenType,
      audience,
    });

    it("exchanges a user's token for one bound to the target service (RFC 8693)", async () => {
      const userToken = await signIn();
      const answer = await token(exchangeForm(userToken), basic("checkout", checkoutSecret));
      expect(answer.status, JSON.stringify(answer.json)).to.equal(200);
      expect(answer.json).to.include({ issued_token_type: accessTokenType, token_type: "Bearer" });
      expect(answer.json.expires_in).to.be.within(1, 300);
      const user = claimsOf(userToken);
      expect(claimsOf(answer.json.access_token)).to.deep.include({ sub: user.sub, sid: user.sid, aud: "orders", act: { sub: "checkout" } });
    });

    it("answers invalid_grant for a subject token that will not do, and invalid_target for an audience the client may not reach", async () => {
      const userToken = await signIn();
      expectOAuthError(await token(exchangeForm("not-a-token"), basic("checkout", checkoutSecret)), 400, "invalid_grant");
      expectOAuthError(await token(exchangeForm(userToken, "payments"), basic("checkout", checkoutSecret)), 400, "invalid_target");
      const { subject_token_type: _, ...untyped } = exchangeForm(userToken);
      expectOAuthError(await token(untyped, basic("checkout", checkoutSecret)), 400, "invalid_request");
    });

    it("answers unauthorized_client, naming what is missing, for a client without Portcullis among its audiences", async () => {
      const answer = await token(exchangeForm(await signIn()), basic("reports", reportsSecret));
      expectOAuthError(answer, 400, "unauthorized_client");
      expect(answer.json.error_description).to.contain("portcullis");
    });
  });

  describe("POST /oauth2/introspect", () => {
    it("describes a good token (RFC 7662) to a client authenticated like at the token endpoint, or with a service token", async () => {
      const userToken = await signIn();
      const user = claimsOf(userToken);
      const answer = await introspect({ token: userToken }, basic("checkout", checkoutSecret));
      expect(answer.status).to.equal(200);
      expect(answer.headers.get("cache-control")).to.equal("no-store");
      expect(answer.json).to.deep.equal({
        active: true,
        token_type: "Bearer",
        iss: user.iss,
        sub: user.sub,
        aud: "portcullis",
        exp: user.exp,
        iat: user.iat,
        jti: user.jti,
        svc: false,
        perm: [],
        sid: user.sid,
        kyc_lvl: user.kyc_lvl,
        amr: user.amr,
      });

      const exchanged = (await token({ grant_type: tokenExchange, subject_token: userToken, subject_token_type: accessTokenType, audience: "orders" }, basic("checkout", checkoutSecret))).json.access_token;
      const serviceToken = (await token({ grant_type: "client_credentials", audience: "portcullis" }, basic("checkout", checkoutSecret))).json.access_token;
      const byBearer = await introspect({ token: exchanged }, bearer(serviceToken));
      expect(byBearer.json).to.deep.include({ active: true, aud: "orders", act: { sub: "checkout" }, client_id: "checkout" });
      const service = await introspect({ token: serviceToken }, bearer(serviceToken));
      expect(service.json).to.deep.include({ active: true, sub: "checkout", svc: true, client_id: "checkout" });
      expect(service.json).not.to.have.any.keys("sid", "kyc_lvl", "amr", "act");
    });

    it("names every service that acted, nested (RFC 8693 §4.1), and says active: false to a client the token is not meant for", async () => {
      const exchangeFor = async (subjectToken: string, audience: string, client: Record<string, string>) =>
        (await token({ grant_type: tokenExchange, subject_token: subjectToken, subject_token_type: accessTokenType, audience }, client)).json.access_token;
      const forOrders = await exchangeFor(await signIn(), "orders", basic("checkout", checkoutSecret));
      const forPayments = await exchangeFor(forOrders, "payments", basic("orders", ordersSecret));

      const answer = await introspect({ token: forPayments }, basic("orders", ordersSecret));
      expect(answer.json).to.deep.include({ active: true, aud: "payments", act: { sub: "orders", act: { sub: "checkout" } }, client_id: "orders" });
      // checkout may reach orders, not payments.
      expect((await introspect({ token: forPayments }, basic("checkout", checkoutSecret))).json).to.deep.equal({ active: false });
    });

    it("answers only {active: false} for a signed-out session's token or one that is not a token", async () => {
      const userToken = await signIn();
      const auth = grpcClient(AuthService, platform.running.grpcPort!);
      try {
        expect((await auth.call("logout", {}, bearer(userToken))).error).to.equal(undefined);
      } finally {
        auth.close();
      }
      for (const token of [userToken, "nonsense"]) {
        const answer = await introspect({ token }, basic("checkout", checkoutSecret));
        expect(answer.status).to.equal(200);
        expect(answer.json).to.deep.equal({ active: false });
      }
    });

    it("answers invalid_request without a token and invalid_client without client authentication", async () => {
      expectOAuthError(await introspect({}, basic("checkout", checkoutSecret)), 400, "invalid_request");
      expectOAuthError(await introspect({ token: "x" }), 401, "invalid_client");
      const badBearer = await introspect({ token: "x" }, bearer("a.b.c"));
      expectOAuthError(badBearer, 401, "invalid_client");
      expect(badBearer.headers.get("www-authenticate")).to.match(/^Bearer /);
    });
  });

  describe("through a gateway that forwards to a gRPC instance (MODE=gateway)", () => {
    let upstream: Running;
    let gateway: Running;

    before(async () => {
      upstream = await startPlatform({ ...platform.stores, MODE: "grpc", PUBLIC_URL: publicUrl, RATE_LIMITS: "service_token_client=6/3600" }, platform.logLines);
      gateway = await startPlatform({ MODE: "gateway", GATEWAY_UPSTREAM: `http://127.0.0.1:${upstream.grpcPort}`, PUBLIC_URL: publicUrl }, platform.logLines);
    });
    after(async () => {
      await gateway.stop();
      await upstream.stop();
    });

    it("issues, exchanges and introspects the same as in-process", async () => {
      const issued = await token({ grant_type: "client_credentials", audience: "orders" }, basic("checkout", checkoutSecret), gateway.httpPort!);
      expect(issued.status, JSON.stringify(issued.json)).to.equal(200);
      expect(claimsOf(issued.json.access_token)).to.include({ sub: "checkout", aud: "orders" });

      const exchanged = await token(
        { grant_type: tokenExchange, subject_token: await signIn(), subject_token_type: accessTokenType, audience: "orders" },
        basic("checkout", checkoutSecret),
        gateway.httpPort!,
      );
      expect(exchanged.status, JSON.stringify(exchanged.json)).to.equal(200);
      const answer = await introspect({ token: exchanged.json.access_token }, basic("checkout", checkoutSecret), gateway.httpPort!);
      expect(answer.json).to.deep.include({ active: true, aud: "orders", act: { sub: "checkout" } });
    });

    it("passes the upstream's refusals on in RFC 6749 form, a rate limit as 429 with Retry-After", async () => {
      expectOAuthError(await token({ grant_type: "client_credentials", audience: "orders" }, basic("checkout", "wrong"), gateway.httpPort!), 401, "invalid_client");
      let limited;
      for (let i = 0; i < 10 && !limited; i++) {
        const answer = await token({ grant_type: "client_credentials", audience: "orders" }, basic("checkout", checkoutSecret), gateway.httpPort!);
        if (answer.status !== 200) limited = answer;
      }
      expectOAuthError(limited!, 429, "invalid_request");
      expect(Number(limited!.headers.get("retry-after"))).to.be.greaterThan(0);
    });

    it("answers 503 temporarily_unavailable when the upstream cannot be reached", async () => {
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
      const port = (closed.address() as { port: number }).port;
      await new Promise((resolve) => closed.close(resolve));
      const cut = await startPlatform({ MODE: "gateway", GATEWAY_UPSTREAM: `http://127.0.0.1:${port}` });
      try {
        expectOAuthError(await token({ grant_type: "client_credentials", audience: "orders" }, basic("checkout", checkoutSecret), cut.httpPort!), 503, "temporarily_unavailable");
      } finally {
        await cut.stop();
      }
    });
  });

  describe("afterwards", () => {
    it("no secret, assertion or token reached a log line or an audit row", async () => {
      await expectNoSecretLeaked(platform.db, platform.logLines, secrets);
      const audited = (await platform.db.query("select distinct event from audit_event")).rows.map((row) => row.event);
      expect(audited).to.include.members(["service_token.issue", "token.exchange"]);
    });
  });
});
