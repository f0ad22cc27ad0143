import http2 from "node:http2";
import { connect } from "node:net";
import { deflateSync } from "node:zlib";
import { expect } from "chai";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { AuthService, GetJwksRequestSchema, SendOtpRequestSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { grpcClient } from "../support/clients.js";
import { platformForSuite } from "../support/suite-platform.js";

const sendOtp = "/portcullis.v1.AuthService/SendOtp";

/** One gRPC length-prefixed frame: the flags byte (1 = compressed), the length, the bytes. */
function frame(flags: number, message: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(message.byteLength, 1);
  return Buffer.concat([head, message]);
}

/** Deterministic bytes (mulberry32), so a failure names the body that caused it. */
function seededBodies(seed: number, count: number): Buffer[] {
  let state = seed;
  const next = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: count }, () => Buffer.from(Array.from({ length: 1 + Math.floor(next() * 64) }, () => Math.floor(next() * 256))));
}

/** A gRPC-Web call as a browser library sends it; its status comes in the headers or in the trailer frame of the body. */
async function grpcWebStatus(port: number, body: Buffer, headers: Record<string, string> = {}): Promise<string | null> {
  const response = await fetch(`http://127.0.0.1:${port}${sendOtp}`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...headers },
    body: new Uint8Array(body),
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  for (let at = 0; at + 5 <= bytes.length; at += 5 + bytes.readUInt32BE(at + 1)) {
    if (bytes[at] !== 0x80) continue;
    const trailer = bytes.subarray(at + 5, at + 5 + bytes.readUInt32BE(at + 1)).toString();
    return /^grpc-status:\s*(\d+)/m.exec(trailer)?.[1] ?? null;
  }
  return response.headers.get("grpc-status");
}

/** A raw HTTP/2 gRPC call, headers and frame exactly as given, as a stock client would put them on the wire. */
function grpcStatus(port: number, headers: Record<string, string>, body: Buffer): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once("error", reject);
    const call = session.request({ ":method": "POST", ":path": sendOtp, "content-type": "application/grpc", te: "trailers", ...headers });
    let status: string | undefined;
    call.on("response", (h) => (status ??= h["grpc-status"] as string | undefined));
    call.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
    call.on("data", () => {});
    call.on("end", () => {
      session.close();
      resolve(status);
    });
    call.end(body);
  });
}

/** The status line the gateway answers to a request written byte for byte. */
function rawHttp(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(request));
    let received = "";
    socket.on("data", (chunk) => (received += String(chunk)));
    socket.once("error", reject);
    socket.once("close", () => resolve(received.split("\r\n")[0]!));
  });
}

describe("Malformed input at both doors", () => {
  const platform = platformForSuite({ logs: true });
  let gatewayPort: number;
  let grpcPort: number;

  before(() => {
    gatewayPort = platform.running.httpPort!;
    grpcPort = platform.running.grpcPort!;
  });

  const errorLines = () => platform.logLines.filter((line) => ["error", "fatal"].includes(JSON.parse(line).level));

  describe("the gateway, Connect binary", () => {
    const post = (body: Buffer) =>
      fetch(`http://127.0.0.1:${gatewayPort}${sendOtp}`, { method: "POST", headers: { "content-type": "application/proto" }, body: new Uint8Array(body) });

    it("answers protobuf that does not parse (00 01) with 400 invalid_argument", async () => {
      const response = await post(Buffer.from([0x00, 0x01]));
      expect(response.status).to.equal(400);
      expect(((await response.json()) as { code: string }).code).to.equal("invalid_argument");
    });

    it("never answers 500 or internal to 50 random bodies", async () => {
      for (const body of seededBodies(12, 50)) {
        const response = await post(body);
        const text = await response.text();
        expect(response.status, body.toString("hex")).to.not.equal(500);
        expect(text, body.toString("hex")).to.not.include('"internal"');
      }
    });
  });

  describe("the gateway, gRPC-Web", () => {
    // gRPC-Web carries every error as grpc-status with HTTP 200, so the caller's fault is status 3, not a 4xx.
    it("answers a frame flagged compressed without grpc-encoding with INVALID_ARGUMENT", async () => {
      const message = toBinary(SendOtpRequestSchema, create(SendOtpRequestSchema, { phoneNumber: "+14155550100" }));
      expect(await grpcWebStatus(gatewayPort, frame(1, message))).to.equal(String(grpc.status.INVALID_ARGUMENT));
    });

    it("answers garbage inside a valid frame with INVALID_ARGUMENT", async () => {
      expect(await grpcWebStatus(gatewayPort, frame(0, Buffer.from([0xff, 0xff, 0xff, 0x0f])))).to.equal(String(grpc.status.INVALID_ARGUMENT));
    });
  });

  describe("the gRPC door", () => {
    it("answers a payload its grpc-encoding cannot inflate with INVALID_ARGUMENT, gzip and deflate", async () => {
      const corrupt = Buffer.from("not a compressed stream");
      expect(await grpcStatus(grpcPort, { "grpc-encoding": "gzip" }, frame(1, corrupt))).to.equal(String(grpc.status.INVALID_ARGUMENT));
      expect(await grpcStatus(grpcPort, { "grpc-encoding": "deflate" }, frame(1, corrupt))).to.equal(String(grpc.status.INVALID_ARGUMENT));
    });

    it("still reads a payload that inflates, and judges the protobuf inside", async () => {
      const garbage = deflateSync(Buffer.from([0xff, 0xff, 0xff, 0x0f]));
      expect(await grpcStatus(grpcPort, { "grpc-encoding": "deflate" }, frame(1, garbage))).to.equal(String(grpc.status.INVALID_ARGUMENT));
    });

    it("answers a grpc-timeout that does not parse with INVALID_ARGUMENT", async () => {
      const empty = frame(0, toBinary(GetJwksRequestSchema, create(GetJwksRequestSchema)));
      expect(await grpcStatus(grpcPort, { "grpc-timeout": "abc" }, empty)).to.equal(String(grpc.status.INVALID_ARGUMENT));
    });
  });

  describe("the Host header", () => {
    it("answers a request without one with 400: HTTP/1.1 (Node's own check) and HTTP/1.0", async () => {
      expect(await rawHttp(gatewayPort, "GET /healthz HTTP/1.1\r\n\r\n")).to.match(/^HTTP\/1\.1 400/);
      const rpc = `POST ${sendOtp} HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`;
      expect(await rawHttp(gatewayPort, rpc)).to.match(/^HTTP\/1\.1 400/);
    });

    it("answers a malformed one with 400", async () => {
      expect(await rawHttp(gatewayPort, "GET /healthz HTTP/1.1\r\nHost: [bad\r\nConnection: close\r\n\r\n")).to.match(/^HTTP\/1\.1 400/);
      const rpc = `POST ${sendOtp} HTTP/1.1\r\nHost: [bad\r\ncontent-type: application/json\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}`;
      expect(await rawHttp(gatewayPort, rpc)).to.match(/^HTTP\/1\.1 400/);
    });
  });

  describe("after all of that", () => {
    it("has logged no error", () => {
      expect(errorLines()).to.deep.equal([]);
    });

    it("keeps serving both doors and every protocol", async () => {
      const web = createClient(AuthService, createGrpcWebTransport({ baseUrl: `http://127.0.0.1:${gatewayPort}`, httpVersion: "1.1" }));
      expect((await web.getJwks({})).keys).to.have.length.greaterThan(0);

      const binary = await fetch(`http://127.0.0.1:${gatewayPort}/portcullis.v1.AuthService/GetJwks`, {
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: toBinary(GetJwksRequestSchema, create(GetJwksRequestSchema)),
      });
      expect(binary.status).to.equal(200);

      const auth = grpcClient(AuthService, grpcPort);
      const { response } = await auth.call("getJwks", {});
      auth.close();
      expect(response?.keys).to.have.length.greaterThan(0);
    });
  });
});
