import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { create, toJson, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  createAsyncIterable,
  encodeEnvelope,
  readAllBytes,
  type UniversalHandler,
  type UniversalServerRequest,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorFromJsonBytes, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { requestIdOf, type Dispatch, type IncomingCall } from "../services/platform/incoming-call.js";
import type { Logger } from "../services/platform/logger.js";
import { AuthService, GetJwksRequestSchema, GetJwksResponseSchema } from "../gen/portcullis/v1/auth_service_pb.js";
import { applyCors } from "./cors.js";
import { createOAuth, headerValue } from "./oauth.js";
import { serveWebApp, type WebAppFiles } from "./web-app.js";

export interface GatewayOptions {
  services: readonly DescService[];
  dispatch: Dispatch;
  /** Whether the platform behind the gateway can serve (Postgres and Redis answer). */
  ready: () => Promise<boolean>;
  corsOrigins: readonly string[];
  maxRequestBytes: number;
  /** How long a client may take to send a request's headers, and the whole request; Node's own (60 s, 5 min) when not given. */
  timeouts?: { headersTimeoutMs: number; requestTimeoutMs: number };
  /** The OAuth endpoints' settings: JWT_ISSUER, PUBLIC_URL and JWT_AUDIENCE. */
  oauth: { issuer: string; publicUrl: string; audience: string };
  /** The sign-in web app, served at / and its own paths; without it / answers 404. */
  webApp?: WebAppFiles;
  logger: Logger;
}

const peerKey = createContextKey<string>("");
/** RFC 3986 host (reg-name or IP literal) and optional port: the whole of a valid Host field. */
const hostPattern = /^(?:\[[\da-f:.]+\]|[\w.~!$&'()*+,;=%-]+)(?::\d{0,5})?$/i;
/** How connect-es 2.1 words the requests it cannot read: protobuf that does not parse, a gRPC-Web frame flagged compressed without grpc-encoding. */
const unreadableRequest = /^(?:parse binary: |received compressed envelope, but do not know how to decompress$)/;

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
      // The adapter maps paths to router.handlers once routes() returns, so the wrapped handlers are the ones served.
      router.handlers.forEach((handler, i) => (router.handlers[i] = unreadableAsInvalidArgument(handler)));
    },
    readMaxBytes: options.maxRequestBytes,
    jsonOptions: { ignoreUnknownFields: true },
    contextValues: (req) => createContextValues().set(peerKey, req.socket.remoteAddress ?? ""),
  });
  const origins = new Set(options.corsOrigins);
  const oauth = createOAuth({ ...options.oauth, dispatch: options.dispatch, maxRequestBytes: options.maxRequestBytes });

  const jwks = async (req: IncomingMessage, res: ServerResponse) => {
    const incoming: IncomingCall = {
      method: AuthService.method.getJwks,
      door: "gateway",
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
    const requestId = requestIdOf(headerValue(req, "x-request-id"));
    req.headers["x-request-id"] = requestId;
    res.setHeader("X-Request-Id", requestId);
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.setHeader("X-Frame-Options", "DENY");
    res.setHeader("Referrer-Policy", "no-referrer");
    res.setHeader("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    res.setHeader("Cross-Origin-Resource-Policy", "same-site");
    // RFC 9112 §3.2: a request with no Host or an invalid one is answered 400 (Node itself only checks that
    // HTTP/1.1 has one); connect-node could not build the request's URL from it either.
    if (!validHost(req.headers.host)) return sendJson(res, 400, { status: "bad request" });
    const path = (req.url ?? "/").split("?")[0]!;
    // Server-to-server: no CORS headers, so no page can read what they answer.
    const isOAuth = oauth.handles(path);
    if (!isOAuth && applyCors(origins, req, res)) return;

    try {
      if (isOAuth) return await oauth.serve(req, res, path);
      if (req.method === "GET" && path === "/healthz") return sendJson(res, 200, { status: "alive" });
      if (req.method === "GET" && path === "/readyz") {
        const ready = await options.ready();
        return sendJson(res, ready ? 200 : 503, { status: ready ? "ready" : "not ready" });
      }
      if (req.method === "GET" && path === "/.well-known/jwks.json") return await jwks(req, res);
      if (options.webApp && serveWebApp(options.webApp, req, res, path)) return;
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
    impl[method.localName] = (
      request: never,
      context: { requestHeader: Headers; signal: AbortSignal; values: { get(key: typeof peerKey): string } },
    ) =>
      dispatch(
        {
          method,
          door: "gateway",
          peer: context.values.get(peerKey),
          header: (name) => context.requestHeader.get(name) ?? undefined,
          signal: context.signal,
        },
        request,
      );
  }
  return impl as never;
}

/**
 * connect-es answers INTERNAL when it cannot read a request, though the bytes are the caller's: INVALID_ARGUMENT.
 * It parses before any interceptor or implementation runs and offers no hook, so the error it has already
 * serialized is recoded: a Connect unary error body, or a gRPC-Web trailers-only frame.
 */
function unreadableAsInvalidArgument(handler: UniversalHandler): UniversalHandler {
  const recoded = async (request: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const response = await handler(request);
    const contentType = response.header?.get("content-type") ?? "";
    if (!response.body || response.header?.has("content-encoding")) return response;
    if (response.status === codeToHttpStatus(Code.Internal) && contentType === "application/json") return recodeConnectError(response);
    if (contentType.startsWith("application/grpc-web")) return recodeGrpcWebTrailers(response);
    return response;
  };
  return Object.assign(recoded, handler);
}

function isUnreadable(error: ConnectError | undefined): boolean {
  return error?.code === Code.Internal && unreadableRequest.test(error.rawMessage);
}

async function recodeConnectError(response: UniversalServerResponse): Promise<UniversalServerResponse> {
  const body = await readAllBytes(response.body!, Number.MAX_SAFE_INTEGER);
  const error = errorFromJsonBytes(body, undefined, new ConnectError("unreadable error body", Code.Internal));
  if (!isUnreadable(error)) return { ...response, body: createAsyncIterable([body]) };
  const recoded = errorToJsonBytes(new ConnectError(error.rawMessage, Code.InvalidArgument), {});
  response.header!.set("content-length", String(recoded.byteLength));
  return { ...response, status: codeToHttpStatus(Code.InvalidArgument), body: createAsyncIterable([recoded]) };
}

/** A gRPC-Web call that failed before any message leaves one frame, the trailers; only such a call can be unreadable. */
async function recodeGrpcWebTrailers(response: UniversalServerResponse): Promise<UniversalServerResponse> {
  const frames = response.body![Symbol.asyncIterator]();
  const first = await frames.next();
  if (first.done) return { ...response, body: createAsyncIterable([]) };
  let head = first.value;
  const trailersOnly = head[0] === trailerFlag && head.byteLength === 5 + new DataView(head.buffer, head.byteOffset).getUint32(1);
  if (trailersOnly) {
    const trailer = trailerParse(head.subarray(5));
    if (isUnreadable(findTrailerError(trailer))) {
      trailer.set("grpc-status", String(Code.InvalidArgument));
      head = encodeEnvelope(trailerFlag, trailerSerialize(trailer));
    }
  }
  return { ...response, body: prepend(head, frames) };
}

async function* prepend(head: Uint8Array, rest: AsyncIterator<Uint8Array>): AsyncIterable<Uint8Array> {
  yield head;
  yield* { [Symbol.asyncIterator]: () => rest };
}

function validHost(host: string | undefined): boolean {
  return host !== undefined && hostPattern.test(host) && URL.canParse(`http://${host}`);
}

function sendJson(res: ServerResponse, status: number, body: unknown, cacheControl = "no-store"): void {
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": cacheControl });
  res.end(JSON.stringify(body));
}
