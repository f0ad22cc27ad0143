/**
 * Load generator, run by run.ts as a child process so the client's work is not
 * done on the server's event loop. One spec in (JSON in argv[2]), one result
 * out (JSON on stdout). Closed loop: `concurrency` requests are always in
 * flight; each completion starts the next one, until the measured window ends.
 *
 * gRPC is driven with raw node:http2 frames, not grpc-js: a grpc-js client
 * costs more CPU per call than the server we measure and would be the
 * bottleneck. Connect JSON is driven with node:http and a keep-alive Agent.
 *
 * stdout: "window open", "window closed", then the result as one JSON line.
 */
import http from "node:http";
import http2 from "node:http2";

export interface LoadSpec {
  protocol: "grpc" | "http";
  /** Loopback only, e.g. http://127.0.0.1:50123. */
  url: string;
  path: string;
  headers: Record<string, string>;
  /** The request body in base64: a length-prefixed gRPC message, or JSON. */
  body: string;
  /** grpc-status (gRPC) or HTTP status (Connect) that counts as a success. */
  expectStatus: number;
  concurrency: number;
  /** HTTP/2 connections the gRPC streams are spread over. */
  connections: number;
  warmupMs: number;
  durationMs: number;
}

export interface LoadResult {
  ok: number;
  errors: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** The first few unexpected outcomes, so a failing run says why. */
  sampleErrors: string[];
}

/** A status number, or a string when the transport failed before a status arrived. */
type Outcome = number | string;
type Sender = (done: (outcome: Outcome) => void) => void;

function grpcSender(spec: LoadSpec): { send: Sender; close(): void } {
  const sessions = Array.from({ length: spec.connections }, () => http2.connect(spec.url).on("error", () => {}));
  const headers = { ":method": "POST", ":path": spec.path, "content-type": "application/grpc", te: "trailers", ...spec.headers };
  const body = Buffer.from(spec.body, "base64");
  let turn = 0;
  const send: Sender = (done) => {
    const stream = sessions[turn++ % sessions.length]!.request(headers);
    let status: string | undefined;
    // A trailers-only response (how errors usually come) carries grpc-status in the headers.
    stream.on("response", (h) => void (status ??= h["grpc-status"] as string | undefined));
    stream.on("trailers", (t) => void (status = (t["grpc-status"] as string | undefined) ?? status));
    stream.on("error", () => {});
    stream.on("close", () => done(status === undefined ? `stream closed without grpc-status (rst ${stream.rstCode})` : Number(status)));
    stream.resume();
    stream.end(body);
  };
  return { send, close: () => sessions.forEach((s) => s.close()) };
}

function httpSender(spec: LoadSpec): { send: Sender; close(): void } {
  const url = new URL(spec.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.concurrency });
  const body = Buffer.from(spec.body, "base64");
  const options: http.RequestOptions = {
    host: url.hostname,
    port: url.port,
    method: "POST",
    path: spec.path,
    headers: { ...spec.headers, "content-length": String(body.length) },
    agent,
  };
  const send: Sender = (done) => {
    let finished = false;
    const finish = (outcome: Outcome) => {
      if (finished) return;
      finished = true;
      done(outcome);
    };
    const req = http.request(options, (res) => {
      res.on("end", () => finish(res.statusCode ?? 0));
      res.on("error", (error) => finish(error.message));
      res.resume();
    });
    req.on("error", (error) => finish(error.message));
    req.end(body);
  };
  return { send, close: () => agent.destroy() };
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!;
}

function drive(spec: LoadSpec, send: Sender): Promise<LoadResult> {
  return new Promise((resolve) => {
    const measureFrom = performance.now() + spec.warmupMs;
    const measureTo = measureFrom + spec.durationMs;
    const latencies: number[] = [];
    const sampleErrors: string[] = [];
    let errors = 0;
    let running = spec.concurrency;
    // Tells run.ts when the window opens and closes, so it reads its own CPU
    // time over exactly that window; written from here, so always in order.
    let said = "";
    const say = (line: string) => {
      if (said !== line) process.stdout.write(`${(said = line)}\n`);
    };
    const next = () => {
      const started = performance.now();
      if (started >= measureTo) {
        say("window closed");
        if (--running === 0) finish();
        return;
      }
      if (started >= measureFrom) say("window open");
      send((outcome) => {
        // Only calls started inside the window count; warm-up calls only warm up.
        if (started >= measureFrom) {
          if (outcome === spec.expectStatus) latencies.push(performance.now() - started);
          else if (errors++ < 5) sampleErrors.push(String(outcome));
        }
        next();
      });
    };
    const finish = () => {
      const sorted = Float64Array.from(latencies).sort();
      resolve({
        ok: sorted.length,
        errors,
        rps: Math.round(sorted.length / (spec.durationMs / 1000)),
        p50Ms: percentile(sorted, 0.5),
        p99Ms: percentile(sorted, 0.99),
        sampleErrors,
      });
    };
    for (let i = 0; i < spec.concurrency; i++) next();
  });
}

const spec = JSON.parse(process.argv[2]!) as LoadSpec;
if (!/^http:\/\/(127\.0\.0\.1|\[::1\]|localhost):\d+$/.test(spec.url)) throw new Error(`refusing a non-loopback target: ${spec.url}`);
const client = spec.protocol === "grpc" ? grpcSender(spec) : httpSender(spec);
const result = await drive(spec, client.send);
client.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
