import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import { create, toJson, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Dispatch, IncomingCall } from "../services/platform/incoming-call.js";
import type { Logger } from "../services/platform/logger.js";
import { AuthService, GetJwksRequestSchema, GetJwksResponseSchema } from "../gen/portcullis/v1/auth_service_pb.js";
import { applyCors } from "./cors.js";

export interface GatewayOptions {
  services: readonly DescService[];
  dispatch: Dispatch;
  /** Whether the platform behind the gateway can serve (Postgres and Redis answer). */
  ready: () => Promise<boolean>;
  corsOrigins: readonly string[];
  maxRequestBytes: number;
  /** How long a client may take to send a request's headers, and the whole request; Node's own (60 s, 5 min) when not given. */
  timeouts?: { headersTimeoutMs: number; requestTimeoutMs: number };
  logger: Logger;
}

const peerKey = createContextKey<string>("");
const requestIdPattern = /^[\w.:-]{1,128}$/;

/**
 * The Connect gateway: the same RPCs as Connect (JSON and binary) and gRPC-Web
 * over HTTP/1.1 for browsers and mobile apps, with CORS, security headers,
 * request ids, health and the JWKS. It never runs the chain itself: `dispatch`
 * either calls the chain in-process or forwards to a gRPC instance that does.
 */
export function createGateway(options: GatewayOptions): Server {
  const rpc = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      for (const service of options.services) router.service(service, serviceImpl(service, options.dispatch));
    },
    readMaxBytes: options.maxRequestBytes,
    jsonOptions: { ignoreUnknownFields: true },
    contextValues: (req) => createContextValues().set(peerKey, req.socket.remoteAddress ?? ""),
  });
  const origins = new Set(options.corsOrigins);

  const jwks = async (req: IncomingMessage, res: ServerResponse) => {
    const incoming: IncomingCall = {
      method: AuthService.method.getJwks,
      peer: req.socket.remoteAddress ?? "",
      header: (name) => headerValue(req, name),
    };
    const response = await options.dispatch(incoming, create(GetJwksRequestSchema));
    sendJson(res, 200, toJson(GetJwksResponseSchema, create(GetJwksResponseSchema, response as never)), "public, max-age=300");
  };

  const timeouts = options.timeouts && {
    headersTimeout: options.timeouts.headersTimeoutMs,
    requestTimeout: options.timeouts.requestTimeoutMs,
    // Node enforces both only when it sweeps its connections (every 30 s by default): sweeping at a quarter of the
    // headers timeout closes a slow client within 1.25 times it.
    connectionsCheckingInterval: Math.max(100, Math.min(options.timeouts.headersTimeoutMs / 4, 30_000)),
  };
  return createServer(timeouts ?? {}, async (req, res) => {
    const given = headerValue(req, "x-request-id");
    const requestId = given && requestIdPattern.test(given) ? given : randomUUID();
    req.headers["x-request-id"] = requestId;
    res.setHeader("X-Request-Id", requestId);
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.setHeader("X-Frame-Options", "DENY");
    res.setHeader("Referrer-Policy", "no-referrer");
    res.setHeader("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    res.setHeader("Cross-Origin-Resource-Policy", "same-site");
    if (applyCors(origins, req, res)) return;

    const path = (req.url ?? "/").split("?")[0];
    try {
      if (req.method === "GET" && path === "/healthz") return sendJson(res, 200, { status: "alive" });
      if (req.method === "GET" && path === "/readyz") {
        const ready = await options.ready();
        return sendJson(res, ready ? 200 : 503, { status: ready ? "ready" : "not ready" });
      }
      if (req.method === "GET" && path === "/.well-known/jwks.json") return await jwks(req, res);
      res.setHeader("Cache-Control", "no-store");
      rpc(req, res);
    } catch (error) {
      if (res.headersSent) return;
      const limited = error instanceof ConnectError && error.code === Code.ResourceExhausted;
      if (limited) {
        res.setHeader("Retry-After", error.metadata.get("retry-after") ?? "1");
        return sendJson(res, 429, { status: "too many requests" });
      }
      options.logger.error({ err: error, rid: requestId, path }, "gateway request failed");
      sendJson(res, 503, { status: "unavailable" });
    }
  });
}

function serviceImpl(service: DescService, dispatch: Dispatch) {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    impl[method.localName] = (request: never, context: { requestHeader: Headers; values: { get(key: typeof peerKey): string } }) =>
      dispatch(
        {
          method,
          peer: context.values.get(peerKey),
          header: (name) => context.requestHeader.get(name) ?? undefined,
        },
        request,
      );
  }
  return impl as never;
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function sendJson(res: ServerResponse, status: number, body: unknown, cacheControl = "no-store"): void {
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": cacheControl });
  res.end(JSON.stringify(body));
}
