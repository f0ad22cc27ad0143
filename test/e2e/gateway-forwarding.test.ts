import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import type { Running } from "../../services/app/servers.js";
import { connectCall } from "../support/clients.js";
import { startPlatform } from "../support/platform.js";
import { until } from "../support/until.js";

/** A gRPC upstream that takes every call and never answers, as a stalled instance would. */
async function stalledUpstream() {
  const calls: http2.ServerHttp2Stream[] = [];
  const callHeaders: http2.IncomingHttpHeaders[] = [];
  const sessions = new Set<http2.Http2Session>();
  const server = http2.createServer();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  server.on("stream", (stream, headers) => {
    calls.push(stream);
    callHeaders.push(headers);
    // The gateway resets calls it gives up on.
    stream.on("error", () => undefined);
    stream.resume();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    calls,
    callHeaders,
    close: async () => {
      for (const session of sessions) session.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Fails with `what` instead of waiting for mocha's timeout when `promise` never settles. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

describe("A gateway forwarding to a gRPC instance (MODE=gateway)", () => {
  let upstream: Awaited<ReturnType<typeof stalledUpstream>>;
  let gateway: Running;

  before(async () => {
    upstream = await stalledUpstream();
    gateway = await startPlatform({ MODE: "gateway", GATEWAY_UPSTREAM: `http://127.0.0.1:${upstream.port}`, GATEWAY_UPSTREAM_TIMEOUT_MS: "300" });
  });
  after(async () => {
    await gateway.stop();
    await upstream.close();
  });

  it("gives the upstream a deadline and answers DEADLINE_EXCEEDED when a stalled upstream misses it", async () => {
    const answer = await within(5000, "the gateway's answer", connectCall(gateway.httpPort!, "/portcullis.v1.AuthService/GetProfile", {}));
    expect(answer.status).to.equal(504);
    expect(answer.json).to.include({ code: "deadline_exceeded" });
    const sent = upstream.callHeaders.at(-1)!;
    expect(sent[":path"]).to.equal("/portcullis.v1.AuthService/GetProfile");
    expect(sent["grpc-timeout"]).to.match(/^\d+m$/);
  });

  it("cancels the forwarded call when the caller goes away", async () => {
    const patient = await startPlatform({
      MODE: "gateway", GATEWAY_UPSTREAM: `http://127.0.0.1:${upstream.port}`, GATEWAY_UPSTREAM_TIMEOUT_MS: "600000",
      // Node keeps the aborted call's connection until its keep-alive timeout: cut it at stop instead of waiting.
      SHUTDOWN_GRACE_SECONDS: "1",
    });
    try {
      const before = upstream.calls.length;
      const caller = new AbortController();
      const call = fetch(`http://127.0.0.1:${patient.httpPort}/portcullis.v1.AuthService/GetProfile`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
        signal: caller.signal,
      }).catch(() => undefined);
      await until(() => upstream.calls.length > before);
      const forwarded = upstream.calls.at(-1)!;
      caller.abort();
      await call;
      await within(5000, "the upstream call's end", forwarded.closed ? Promise.resolve([]) : once(forwarded, "close"));
      expect(forwarded.rstCode, "reset as cancelled").to.equal(http2.constants.NGHTTP2_CANCEL);
    } finally {
      await patient.stop();
    }
  });

  it("answers UNAVAILABLE when the upstream cannot be reached", async () => {
    const closed = await stalledUpstream();
    await closed.close();
    const unreachable = await startPlatform({ MODE: "gateway", GATEWAY_UPSTREAM: `http://127.0.0.1:${closed.port}` });
    try {
      const answer = await within(5000, "the gateway's answer", connectCall(unreachable.httpPort!, "/portcullis.v1.AuthService/GetProfile", {}));
      expect(answer.status).to.equal(503);
      expect(answer.json).to.include({ code: "unavailable" });
    } finally {
      await unreachable.stop();
    }
  });
});
