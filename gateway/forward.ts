import { createRegistry, fromBinary, type DescService, type Message } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Span } from "@opentelemetry/api";
import { peerAddress, type Dispatch, type IncomingCall } from "../services/platform/incoming-call.js";
import { endDoorSpan, inDoorSpan, injectTraceContext, tracingOn } from "../services/platform/tracing.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { file_google_rpc_error_details } from "../gen/google/rpc/error_details_pb.js";

/** Error details are decoded again so the gateway's JSON errors carry their readable "debug" form. */
const detailTypes = createRegistry(file_google_rpc_error_details);

/** A gateway that does not trace passes the caller's trace context on as it came. */
const forwardedHeaders = ["authorization", "user-agent", "x-request-id", "x-captcha-token", "traceparent", "tracestate"];

/**
 * Forwards gateway calls to a gRPC instance, which runs the chain. The client
 * address travels as X-Forwarded-For: list the gateway in the gRPC instance's
 * TRUSTED_PROXIES so limits count the real client.
 */
export function forwardingDispatch(
  upstream: string,
  timeoutMs: number,
  services: readonly DescService[],
): { dispatch: Dispatch; ready: () => Promise<boolean> } {
  const transport = createGrpcTransport({ baseUrl: upstream });
  const clients = new Map<DescService, Client<DescService>>(services.map((s) => [s, createClient(s, transport)]));
  const health = createClient(Health, transport);

  const forward: Dispatch = async (incoming, request) => {
    const headers = new Headers();
    for (const name of forwardedHeaders) {
      const value = incoming.header(name);
      if (value !== undefined) headers.set(name, value);
    }
    // The gRPC instance's span becomes a child of the gateway's.
    if (tracingOn) injectTraceContext(headers);
    const chain = incoming.header("x-forwarded-for");
    const peer = peerAddress(incoming.peer);
    headers.set("x-forwarded-for", chain ? `${chain}, ${peer}` : peer);
    const client = clients.get(incoming.method.parent)! as unknown as Record<string, (req: unknown, options: unknown) => Promise<unknown>>;
    try {
      // A stalled upstream or a caller that went away must not hold the gateway's request and socket open.
      return await client[incoming.method.localName]!(request, { headers, timeoutMs, signal: incoming.signal });
    } catch (error) {
      const upstreamError = ConnectError.from(error);
      // Keep what the client needs (Retry-After), not the upstream's transport headers.
      const metadata = new Headers();
      const retryAfter = upstreamError.metadata.get("retry-after");
      if (retryAfter) metadata.set("retry-after", retryAfter);
      const forwarded = new ConnectError(upstreamError.rawMessage, upstreamError.code, metadata);
      for (const detail of upstreamError.details) {
        const desc = "desc" in detail ? undefined : detailTypes.getMessage(detail.type);
        forwarded.details.push(desc ? { desc, value: fromBinary(desc, (detail as { value: Uint8Array }).value) } : detail);
      }
      throw forwarded;
    }
  };

  // The chain, which makes the door's span in a process that runs it, is on the far side here: the gateway makes its own.
  const tracedForward = async (span: Span, incoming: IncomingCall, request: Message) => {
    try {
      const answer = await forward(incoming, request);
      endDoorSpan(span, incoming.door, undefined);
      return answer;
    } catch (error) {
      endDoorSpan(span, incoming.door, ConnectError.from(error).code);
      throw error;
    }
  };
  const dispatch: Dispatch = (incoming, request) =>
    tracingOn ? inDoorSpan(incoming, (span) => tracedForward(span, incoming, request)) : forward(incoming, request);

  const ready = async () => {
    try {
      const response = await health.check({ service: "" }, { timeoutMs: 2000 });
      return response.status === HealthCheckResponse_ServingStatus.SERVING;
    } catch {
      return false;
    }
  };
  return { dispatch, ready };
}
