import diagnosticsChannel from "node:diagnostics_channel";
import { Code } from "@connectrpc/connect";
import {
  context,
  diag,
  DiagLogLevel,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import type { Config } from "./config.js";
import type { IncomingCall } from "./incoming-call.js";
import type { Logger } from "./logger.js";

/**
 * OpenTelemetry tracing, off unless an OTLP endpoint is configured. Tracing
 * is process-wide in OpenTelemetry (one provider, one context manager), so
 * this module holds it; instances started side by side in one process (tests)
 * share it, and the last one to stop shuts it down.
 *
 * Call sites check `tracingOn` before anything else, so with tracing off a
 * call pays one property read: no span, no closure, no context lookup.
 */
export let tracingOn = false;

let tracer: Tracer | undefined;
let provider: NodeTracerProvider | undefined;
let users = 0;

/** The W3C propagator reads a call's headers by lower-case name; it never needs them listed. */
const headerGetter: TextMapGetter<IncomingCall> = { get: (call, key) => call.header(key), keys: () => [] };

/**
 * Starts tracing when `settings.endpoint` is set; returns what stops it
 * (flushing the spans still queued). The SDK reads the rest of the standard
 * OTEL_* variables itself (sampler, batch sizes, exporter headers, timeout,
 * compression, resource attributes).
 */
export function startTracing(settings: Config["tracing"], logger: Logger): () => Promise<void> {
  if (!settings.endpoint) return async () => {};
  if (users++ === 0) {
    diag.setLogger(
      {
        error: (message) => logger.warn({ detail: message }, "tracing"),
        warn: (message) => logger.warn({ detail: message }, "tracing"),
        info: () => {},
        debug: () => {},
        verbose: () => {},
      },
      DiagLogLevel.WARN,
    );
    provider = new NodeTracerProvider({
      resource: defaultResource()
        .merge(detectResources({ detectors: [envDetector] }))
        .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: settings.serviceName })),
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: settings.endpoint }))],
    });
    // Trace context only: baggage from callers would be carried on to every service we call.
    provider.register({ propagator: new W3CTraceContextPropagator() });
    tracer = provider.getTracer("portcullis");
    diagnosticsChannel.tracingChannel("ioredis:command").subscribe(redisCommandSpans);
    tracingOn = true;
    logger.info({ endpoint: settings.endpoint, service: settings.serviceName }, "tracing on");
  }
  let stopped = false;
  return async () => {
    if (stopped) return;
    stopped = true;
    if (--users > 0) return;
    tracingOn = false;
    diagnosticsChannel.tracingChannel("ioredis:command").unsubscribe(redisCommandSpans);
    const stopping = provider!;
    provider = tracer = undefined;
    await stopping.shutdown();
    trace.disable();
    context.disable();
    propagation.disable();
    diag.disable();
  };
}

/** Exports the spans ended so far (for tests; stopping tracing flushes too). */
export async function flushTracing(): Promise<void> {
  await provider?.forceFlush();
}

const rpcSystems: Record<IncomingCall["door"], string> = { grpc: "grpc", gateway: "connect_rpc" };

/** Codes that say the server failed, not the caller (OpenTelemetry's RPC conventions). */
const serverFaults = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

/**
 * Runs `work` in the SERVER span of a call at a door, named by its RPC path
 * ("portcullis.v1.AuthService/SendOtp"): a child of the caller's span when it
 * sent `traceparent`, else a new trace. `work` ends it with endDoorSpan.
 */
export function inDoorSpan<T>(incoming: IncomingCall, work: (span: Span) => Promise<T>): Promise<T> {
  const { parent: service, name } = incoming.method;
  const attributes = { "rpc.system": rpcSystems[incoming.door], "rpc.service": service.typeName, "rpc.method": name };
  const parent = propagation.extract(ROOT_CONTEXT, incoming, headerGetter);
  return tracer!.startActiveSpan(`${service.typeName}/${name}`, { kind: SpanKind.SERVER, attributes }, parent, work);
}

/** The answer on a door's span (gRPC's numeric status, or the Connect error code: "resource_exhausted"), then ends it. */
export function endDoorSpan(span: Span, door: IncomingCall["door"], code: Code | undefined, requestId?: string): void {
  if (requestId) span.setAttribute("portcullis.request_id", requestId);
  if (door === "grpc") span.setAttribute("rpc.grpc.status_code", code ?? 0);
  else if (code !== undefined) span.setAttribute("rpc.connect_rpc.error_code", Code[code].replace(/[A-Z]/g, (letter, at: number) => (at ? "_" : "") + letter.toLowerCase()));
  if (code !== undefined && serverFaults.has(code)) span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}

/**
 * Runs `work` in a span that is a child of the current one, ending it when
 * `work` settles (marked as an error if it throws, without the error's message:
 * that may quote what the call sent). With no current span (background work)
 * it only runs `work`: lone spans for every timer's statement are noise.
 */
export async function inChildSpan<T>(name: string, kind: SpanKind, attributes: Attributes, work: () => Promise<T>): Promise<T> {
  const parent = context.active();
  if (!trace.getSpan(parent)) return work();
  return inSpan(name, kind, attributes, parent, work);
}

/** Like inChildSpan, but starts a trace of its own when there is no current span: for work worth seeing on its own. */
export function inRootOrChildSpan<T>(name: string, attributes: Attributes, work: () => Promise<T>): Promise<T> {
  return inSpan(name, SpanKind.INTERNAL, attributes, context.active(), work);
}

async function inSpan<T>(name: string, kind: SpanKind, attributes: Attributes, parent: Context, work: () => Promise<T>): Promise<T> {
  const span = tracer!.startSpan(name, { kind, attributes }, parent);
  try {
    return await context.with(trace.setSpan(parent, span), work);
  } catch (error) {
    markFailed(span, error);
    throw error;
  } finally {
    span.end();
  }
}

/** An error's class only (its message may quote what the call sent). */
function markFailed(span: Span, error: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR });
  span.setAttribute("error.type", error instanceof Error ? error.name : typeof error);
}

/** Writes the current span's context into `headers` (as traceparent), for a call we make onwards. */
export function injectTraceContext(headers: Headers): void {
  propagation.inject(context.active(), headers, { set: (carrier, key, value) => carrier.set(key, value) });
}

/** The trace id of `span` when it is being recorded (sampled), for log lines. */
export function recordedTraceId(span: Span | undefined): string | undefined {
  return span?.isRecording() ? span.spanContext().traceId : undefined;
}

interface RedisCommandContext {
  command: string;
  span?: Span;
  error?: unknown;
}

/**
 * ioredis publishes each command it writes on the "ioredis:command" tracing
 * channel, from the caller's async context. A command auto-pipelined with
 * others is written from the first one's context, so under load it may show
 * under another call's span. Only the command's name: never its arguments.
 */
const redisCommandSpans = {
  start(message: unknown) {
    const command = message as RedisCommandContext;
    const parent = context.active();
    if (!tracer || !trace.getSpan(parent)) return;
    command.span = tracer.startSpan(command.command, { kind: SpanKind.CLIENT, attributes: { "db.system": "redis" } }, parent);
  },
  end() {},
  asyncStart() {},
  asyncEnd(message: unknown) {
    const command = message as RedisCommandContext;
    if (!command.span) return;
    if (command.error !== undefined) markFailed(command.span, command.error);
    command.span.end();
  },
  error() {},
};
