/**
 * What `npm run bench` measures: one entry per scenario. Each entry starts the
 * server it needs on a free loopback port and says what load to drive at it;
 * run.ts does the rest (load process, figures, ratios). A new scenario (sign-in
 * per second, refresh per second, ...) is one more entry here.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { create, toBinary, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { createGateway } from "../../gateway/server.js";
import { services, type App } from "../../services/app/app.js";
import type { Config } from "../../services/platform/config.js";
import { createGrpcServer } from "../../services/platform/grpc-server.js";
import type { Logger } from "../../services/platform/logger.js";
import type { Dispatch } from "../../services/platform/incoming-call.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import type { LoadSpec } from "./load.js";

export interface BenchContext {
  app: App;
  config: Config;
  logger: Logger;
  /** A user access token (KYC level 1) minted from the app's key ring. */
  userToken: string;
}

/** The per-scenario part of a load spec; run.ts adds concurrency and timing. */
export type Target = Pick<LoadSpec, "protocol" | "url" | "path" | "headers" | "body" | "expectStatus">;

export interface Scenario {
  name: string;
  /** The scenario of the same door without the chain; `<name>_vs_bare` = req/s of this / req/s of that. */
  baseline?: string;
  start(ctx: BenchContext): Promise<{ target: Target; stop(): Promise<void> }>;
}

const getJwks = AuthService.method.getJwks;
const getKycStatus = KycService.method.getKycStatus;
const noop = async () => ({});

/**
 * The chain (JWT verify and cache, revocation check, KYC, Redis limits,
 * logging) in front of a no-op handler, so the figure is the chain's cost and
 * not the cost of a handler that does not exist yet.
 */
const chainOnly = (app: App): Dispatch => (incoming, request) => app.chain.run(incoming, request, noop);
const bearer = (ctx: BenchContext) => ({ authorization: `Bearer ${ctx.userToken}` });

export const scenarios: Scenario[] = [
  // The baseline is our own grpc-js adapter (createGrpcServer: descriptors,
  // protobuf-es (de)serialisation) with a no-op dispatch, so the only
  // difference from grpc_auth is the chain.
  // The bare servers get the same request, token header included: reading
  // headers is the transport's cost, checking them is the chain's.
  { name: "grpc_bare", start: (ctx) => grpcServer([KycService], async () => ({}), getKycStatus, bearer(ctx)) },
  { name: "grpc_public", baseline: "grpc_bare", start: (ctx) => grpcServer(services, ctx.app.dispatch, getJwks, {}) },
  { name: "grpc_auth", baseline: "grpc_bare", start: (ctx) => grpcServer(services, chainOnly(ctx.app), getKycStatus, bearer(ctx)) },
  // The baseline is plain connect-node, without the gateway's headers, CORS and request ids.
  { name: "connect_bare", start: (ctx) => httpServer(bareConnect(), getKycStatus, bearer(ctx)) },
  { name: "connect_public", baseline: "connect_bare", start: (ctx) => httpServer(gateway(ctx, ctx.app.dispatch), getJwks, {}) },
  { name: "connect_auth", baseline: "connect_bare", start: (ctx) => httpServer(gateway(ctx, chainOnly(ctx.app)), getKycStatus, bearer(ctx)) },
];

const rpcPath = (method: DescMethod) => `/${method.parent.typeName}/${method.name}`;

/** An empty request as a gRPC length-prefixed message: flag byte, 4-byte length, bytes. */
function grpcFrame(method: DescMethod): Buffer {
  const message = toBinary(method.input, create(method.input));
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

async function grpcServer(served: readonly DescService[], dispatch: Dispatch, method: DescMethod, headers: Record<string, string>) {
  const { server } = createGrpcServer({ services: served, dispatch, maxRequestBytes: 64 * 1024 });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  const target: Target = {
    protocol: "grpc",
    url: `http://127.0.0.1:${port}`,
    path: rpcPath(method),
    headers,
    body: grpcFrame(method).toString("base64"),
    expectStatus: 0,
  };
  // The load is over by now: nothing in flight to wait for.
  return { target, stop: async () => server.forceShutdown() };
}

function gateway(ctx: BenchContext, dispatch: Dispatch): Server {
  return createGateway({
    services,
    dispatch,
    ready: () => ctx.app.ready(),
    corsOrigins: [],
    maxRequestBytes: ctx.config.maxRequestBytes,
    oauth: { issuer: ctx.config.jwt.issuer, publicUrl: ctx.config.publicUrl, audience: ctx.config.jwt.audience },
    logger: ctx.logger,
  });
}

function bareConnect(): Server {
  return createServer(connectNodeAdapter({ routes: (router) => router.service(KycService, { getKycStatus: async () => ({}) }) }));
}

async function httpServer(server: Server, method: DescMethod, headers: Record<string, string>) {
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const target: Target = {
    protocol: "http",
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    path: rpcPath(method),
    headers: { "content-type": "application/json", ...headers },
    body: Buffer.from("{}").toString("base64"),
    expectStatus: 200,
  };
  const stop = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return { target, stop };
}
