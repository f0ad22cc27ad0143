import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import type { Running } from "../../services/app/servers.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { forgedTokens } from "../support/forged-tokens.js";
import { mintUserToken, sharedStores, startPlatform } from "../support/platform.js";
import { dropTestDatabases } from "../support/stores.js";

const run = promisify(execFile);

/** Both deployments must behave the same to a client. */
const deployments = {
  "in one process (npm start)": async () => {
    const all = await startPlatform({ ...(await sharedStores()) });
    return { grpc: all, gateway: all, stop: () => all.stop() };
  },
  "as a gateway forwarding to a gRPC instance": async () => {
    const grpcOnly = await startPlatform({ ...(await sharedStores()), MODE: "grpc", TRUSTED_PROXIES: "127.0.0.1" });
    const gateway = await startPlatform({ MODE: "gateway", GATEWAY_UPSTREAM: `http://127.0.0.1:${grpcOnly.grpcPort}` });
    return { grpc: grpcOnly, gateway, stop: async () => { await gateway.stop(); await grpcOnly.stop(); } };
  },
};

after(dropTestDatabases);

for (const [deployment, start] of Object.entries(deployments)) {
  describe(`The spine, ${deployment}`, () => {
    let grpcSide: Running;
    let gatewayPort: number;
    let stop: () => Promise<void>;
    let auth: ReturnType<typeof grpcClient<typeof AuthService>>;
    let kyc: ReturnType<typeof grpcClient<typeof KycService>>;

    before(async () => {
      const started = await start();
      grpcSide = started.grpc;
      gatewayPort = started.gateway.httpPort!;
      stop = started.stop;
      auth = grpcClient(AuthService, grpcSide.grpcPort!);
      kyc = grpcClient(KycService, grpcSide.grpcPort!);
    });
    after(async () => {
      auth.close();
      kyc.close();
      await stop();
    });

    describe("discovery and health", () => {
      it("lists the three services, health and reflection to buf curl", async () => {
        const { stdout } = await run("node_modules/.bin/buf", [
          "curl", "--list-services", "--protocol", "grpc", "--http2-prior-knowledge", `http://127.0.0.1:${grpcSide.grpcPort}`,
        ]);
        expect(stdout.trim().split("\n")).to.include.members([
          "portcullis.v1.AuthService", "portcullis.v1.SessionService", "portcullis.v1.KycService",
          "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
        ]);
      });

      it("answers SERVING to a gRPC health check while Postgres and Redis answer", async () => {
        const health = grpcClient(Health, grpcSide.grpcPort!);
        const { response } = await health.call("check", { service: "" });
        health.close();
        expect(response?.status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
      });

      it("answers /healthz and /readyz on the gateway", async () => {
        expect((await fetch(`http://127.0.0.1:${gatewayPort}/healthz`)).status).to.equal(200);
        expect((await fetch(`http://127.0.0.1:${gatewayPort}/readyz`)).status).to.equal(200);
      });
    });

    describe("authentication", () => {
      it("refuses a protected RPC without a token: UNAUTHENTICATED over gRPC, 401 through the gateway", async () => {
        const { error } = await auth.call("getProfile", {});
        expect(error?.code).to.equal(grpc.status.UNAUTHENTICATED);
        expect(detailOf(grpcErrorDetails(error!), ErrorInfoSchema)?.reason).to.equal("TOKEN_MISSING");

        const http = await connectCall(gatewayPort, "/portcullis.v1.AuthService/GetProfile", {});
        expect(http.status).to.equal(401);
        expect(http.json.code).to.equal("unauthenticated");
        expect(http.json.details[0].type).to.equal("google.rpc.ErrorInfo");
      });

      it("lets a key-ring token through the chain to the handler", async () => {
        const { token } = await mintUserToken(grpcSide);
        const sessions = grpcClient(SessionService, grpcSide.grpcPort!);
        const { response, error } = await sessions.call("listSessions", {}, { authorization: `Bearer ${token}` });
        sessions.close();
        expect(error).to.equal(undefined);
        expect(response?.sessions).to.deep.equal([]);

        const http = await connectCall(gatewayPort, "/portcullis.v1.SessionService/ListSessions", {}, { authorization: `Bearer ${token}` });
        expect(http.status).to.equal(200);
      });

      it("refuses expired, tampered, alg none, HS256-with-public-key, unknown-kid and wrong-audience tokens", async () => {
        for (const [kind, token] of Object.entries(await forgedTokens(grpcSide.app!))) {
          const { error } = await auth.call("getProfile", {}, { authorization: `Bearer ${token}` });
          expect(error?.code, kind).to.equal(grpc.status.UNAUTHENTICATED);
          const reason = detailOf(grpcErrorDetails(error!), ErrorInfoSchema)?.reason;
          expect(reason, kind).to.equal(kind === "expired" ? "TOKEN_EXPIRED" : "TOKEN_INVALID");

          const http = await connectCall(gatewayPort, "/portcullis.v1.AuthService/GetProfile", {}, { authorization: `Bearer ${token}` });
          expect(http.status, kind).to.equal(401);
        }
      });
    });

    describe("KYC level and permissions", () => {
      it("refuses a level too low with PERMISSION_DENIED, KYC_LEVEL_REQUIRED and both levels", async () => {
        const { token } = await mintUserToken(grpcSide, { kycLevel: 0 });
        const { error } = await kyc.call("submitDocumentKyc", {}, { authorization: `Bearer ${token}` });
        expect(error?.code).to.equal(grpc.status.PERMISSION_DENIED);
        const info = detailOf(grpcErrorDetails(error!), ErrorInfoSchema);
        expect(info?.reason).to.equal("KYC_LEVEL_REQUIRED");
        expect(info?.metadata).to.deep.equal({ required_level: "1", current_level: "0" });

        const http = await connectCall(gatewayPort, "/portcullis.v1.KycService/SubmitDocumentKyc", {}, { authorization: `Bearer ${token}` });
        expect(http.status).to.equal(403);
        expect(http.json.details[0].debug.reason).to.equal("KYC_LEVEL_REQUIRED");
      });

      it("lets the required level through to the handler", async () => {
        const { token } = await mintUserToken(grpcSide, { kycLevel: 1 });
        const { error } = await kyc.call("submitDocumentKyc", {}, { authorization: `Bearer ${token}` });
        expect(error?.code, "the handler's own validation answers").to.equal(grpc.status.INVALID_ARGUMENT);
      });

      it("refuses a method whose permission the token lacks", async () => {
        const { token } = await mintUserToken(grpcSide);
        const { error } = await kyc.call("listKycSubmissions", {}, { authorization: `Bearer ${token}` });
        expect(error?.code).to.equal(grpc.status.PERMISSION_DENIED);
        expect(detailOf(grpcErrorDetails(error!), ErrorInfoSchema)?.reason).to.equal("PERMISSION_REQUIRED");

        const reviewer = await mintUserToken(grpcSide, { permissions: ["kyc.review"] });
        const allowed = await kyc.call("listKycSubmissions", {}, { authorization: `Bearer ${reviewer.token}` });
        expect(allowed.error).to.equal(undefined);
      });
    });

    describe("the JWKS", () => {
      it("publishes kid, alg and use on each key and no private member, by RPC and at /.well-known/jwks.json", async () => {
        const http = await fetch(`http://127.0.0.1:${gatewayPort}/.well-known/jwks.json`);
        const jwks = (await http.json()) as { keys: Record<string, string>[] };
        const { response } = await auth.call("getJwks", {});
        expect(response!.keys.map((k) => k.kid)).to.deep.equal(jwks.keys.map((k) => k.kid));
        expect(jwks.keys).to.have.length.greaterThan(0);
        for (const key of jwks.keys) {
          expect(key).to.include({ use: "sig", alg: "ES256", kty: "EC" });
          expect(key.kid).to.be.a("string").and.not.empty;
          for (const secret of ["d", "p", "q", "dp", "dq", "qi"]) expect(key).not.to.have.property(secret);
        }
      });
    });

    describe("the gateway's HTTP surface", () => {
      it("returns the caller's X-Request-Id, or one of its own, with nosniff", async () => {
        const given = await connectCall(gatewayPort, "/portcullis.v1.AuthService/GetJwks", {}, { "x-request-id": "trace-123" });
        expect(given.headers.get("x-request-id")).to.equal("trace-123");
        expect(given.headers.get("x-content-type-options")).to.equal("nosniff");
        const generated = await connectCall(gatewayPort, "/portcullis.v1.AuthService/GetJwks", {});
        expect(generated.headers.get("x-request-id")).to.match(/^[0-9a-f-]{36}$/);
      });
    });

    describe("malformed input", () => {
      it("answers bad JSON, wrong types and oversized bodies with the protocol's error, never INTERNAL", async () => {
        const badJson = await connectCall(gatewayPort, "/portcullis.v1.AuthService/SendOtp", "{not json");
        expect(badJson.json.code).to.equal("invalid_argument");
        const wrongType = await connectCall(gatewayPort, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: 12 });
        expect(wrongType.json.code).to.equal("invalid_argument");
        const wrongShape = await connectCall(gatewayPort, "/portcullis.v1.AuthService/SendOtp", "[1,2]");
        expect(wrongShape.json.code).to.equal("invalid_argument");
        const oversized = await connectCall(gatewayPort, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: "9".repeat(200_000) });
        expect(oversized.json.code).to.equal("resource_exhausted");

        const garbage = await auth.callRaw("/portcullis.v1.AuthService/SendOtp", Buffer.from([0xff, 0xff, 0xff, 0x0f]));
        expect(garbage?.code).to.equal(grpc.status.INVALID_ARGUMENT);
        const huge = await auth.callRaw("/portcullis.v1.AuthService/SendOtp", Buffer.alloc(200_000, 1));
        expect(huge?.code).to.equal(grpc.status.RESOURCE_EXHAUSTED);
      });

      it("keeps serving after all of that", async () => {
        const { response } = await auth.call("getJwks", {});
        expect(response?.keys).to.have.length.greaterThan(0);
      });
    });
  });
}

describe("CORS", () => {
  let running: Running;
  before(async () => {
    running = await startPlatform({ ...(await sharedStores()), CORS_ORIGINS: "https://app.example.com" });
  });
  after(() => running.stop());

  const preflight = (origin: string) =>
    fetch(`http://127.0.0.1:${running.httpPort}/portcullis.v1.AuthService/SendOtp`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type,authorization" },
    });

  it("answers a preflight from an allowed origin with the CORS headers", async () => {
    const response = await preflight("https://app.example.com");
    expect(response.status).to.equal(204);
    expect(response.headers.get("access-control-allow-origin")).to.equal("https://app.example.com");
    expect(response.headers.get("access-control-allow-headers")).to.match(/authorization/i);
    expect(response.headers.get("access-control-allow-methods")).to.match(/POST/);
  });

  it("gives another origin no CORS headers", async () => {
    const response = await preflight("https://evil.example.net");
    expect(response.headers.get("access-control-allow-origin")).to.equal(null);
    expect(response.headers.get("access-control-allow-headers")).to.equal(null);
  });
});

describe("Start-up of several instances", () => {
  it("migrates an empty database once when three instances start at the same moment", async () => {
    const stores = await sharedStores();
    const running = await Promise.all([1, 2, 3].map(() => startPlatform({ ...stores })));
    try {
      const keys = await Promise.all(running.map((r) => r.app!.keyRing.jwks().map((k) => k.kid).join()));
      expect(new Set(keys).size, "one key ring, not three").to.equal(1);
    } finally {
      await Promise.all(running.map((r) => r.stop()));
    }
  });
});
