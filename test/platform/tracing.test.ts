import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import type { Running } from "../../services/app/servers.js";
import { ConfigError, loadConfig } from "../../services/platform/config.js";
import { flushTracing, tracingOn } from "../../services/platform/tracing.js";
import { injectTraceContext, type UnaryHandler } from "../../services/guard/guard.js";
import { KycService, SourceOfFunds } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { connectCall, grpcClient } from "../support/clients.js";
import { serveBehindGuard } from "../support/guarded-service.js";
import { mintUserToken, sharedStores, startPlatform, type SharedStores } from "../support/platform.js";
import { MailInbox } from "../support/mail-inbox.js";
import { bearer, newPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { dropTestDatabases } from "../support/stores.js";

/** A span as OTLP/JSON carries it (the exporter's format), its attributes flattened. */
interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** 1 internal, 2 server, 3 client. */
  kind: number;
  attributes: Record<string, unknown>;
}

const serverKind = 2;
const clientKind = 3;

/** An OTLP/HTTP collector stand-in: keeps every export request it is sent on /v1/traces. */
class OtlpReceiver {
  readonly bodies: string[] = [];
  private server?: Server;

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        if (req.method !== "POST" || req.url !== "/v1/traces") return res.writeHead(404).end();
        this.bodies.push(body);
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  spans(): ExportedSpan[] {
    return this.bodies.flatMap((body) =>
      JSON.parse(body).resourceSpans.flatMap((resource: any) =>
        resource.scopeSpans.flatMap((scope: any) =>
          scope.spans.map((span: any) => ({
            ...span,
            attributes: Object.fromEntries((span.attributes ?? []).map((a: any) => [a.key, Object.values(a.value)[0]])),
          })),
        ),
      ),
    );
  }

  stop(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

describe("Tracing", () => {
  const receiver = new OtlpReceiver();
  const inbox = new SmsInbox();
  const mail = new MailInbox();
  const logLines: string[] = [];
  const secrets: string[] = [];
  let running: Running;
  /** A gateway deployed apart, forwarding to `running`'s gRPC door. */
  let gateway: Running;
  let stores: SharedStores;
  let endpoint: string;

  before(async () => {
    endpoint = await receiver.start();
    stores = await sharedStores();
    running = await startPlatform(
      {
        ...stores,
        ...(await inbox.env()),
        ...(await mail.env()),
        // Register then Login, with no confirmation in between: the argon2 spans are what matter here.
        EMAIL_VERIFICATION: "optional",
        OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
        OTEL_SERVICE_NAME: "portcullis-test",
      },
      logLines,
    );
    gateway = await startPlatform({
      MODE: "gateway",
      GATEWAY_UPSTREAM: `http://127.0.0.1:${running.grpcPort}`,
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    });
  });

  after(async () => {
    await gateway?.stop();
    await running?.stop();
    expect(tracingOn, "off again for the other test files").to.equal(false);
    await Promise.all([receiver.stop(), inbox.stop(), mail.stop()]);
    await dropTestDatabases();
  });

  /** The spans of the trace whose door span carries `requestId`. */
  async function traceOf(requestId: string): Promise<{ door: ExportedSpan; spans: ExportedSpan[] }> {
    await flushTracing();
    const all = receiver.spans();
    const door = all.find((span) => span.attributes["portcullis.request_id"] === requestId);
    expect(door, `a door span for ${requestId}`).to.not.equal(undefined);
    return { door: door!, spans: all.filter((span) => span.traceId === door!.traceId) };
  }

  /** Every span of the trace hangs, through its parents, from `door`. */
  function expectOneTree(door: ExportedSpan, spans: ExportedSpan[]) {
    const byId = new Map(spans.map((span) => [span.spanId, span]));
    for (const span of spans) {
      let at = span;
      while (at !== door) {
        const parent = byId.get(at.parentSpanId ?? "");
        expect(parent, `${span.name} hangs from the door span`).to.not.equal(undefined);
        at = parent!;
      }
    }
  }

  function accessLine(requestId: string) {
    const line = logLines.map((l) => JSON.parse(l)).find((l) => l.msg === "call" && l.rid === requestId);
    expect(line, `an access log line for ${requestId}`).to.not.equal(undefined);
    return line;
  }

  it("makes one trace of a phone sign-in call, with its rate limits, SQL, Redis and SMS under the door span", async () => {
    const phone = newPhone();
    secrets.push(phone, phone.slice(1));
    const sendId = `trace-send-${Date.now()}`;
    const sent = await connectCall(running.httpPort!, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: phone }, { "x-request-id": sendId });
    expect(sent.status).to.equal(200);
    const code = inbox.codeFor(phone);
    secrets.push(code);
    const verifyId = `trace-verify-${Date.now()}`;
    const verified = await connectCall(
      running.httpPort!,
      "/portcullis.v1.AuthService/VerifyOtp",
      { phoneNumber: phone, code, device: { deviceId: "trace-device", deviceType: "DEVICE_TYPE_WEB" } },
      { "x-request-id": verifyId },
    );
    expect(verified.status).to.equal(200);
    secrets.push(verified.json.tokens.accessToken, verified.json.tokens.refreshToken);

    const { door, spans } = await traceOf(sendId);
    expect(door.name).to.equal("portcullis.v1.AuthService/SendOtp");
    expect(door.kind).to.equal(serverKind);
    expect(door.parentSpanId ?? "", "a new trace: the browser sent no traceparent").to.equal("");
    expect(door.attributes).to.include({ "rpc.system": "connect_rpc", "rpc.service": "portcullis.v1.AuthService", "rpc.method": "SendOtp" });
    expect(spans.filter((span) => span.kind === serverKind), "one door span").to.have.length(1);
    expectOneTree(door, spans);
    const names = spans.map((span) => span.name);
    expect(names).to.include.members(["rate_limit", "sms.send"]);
    const sql = spans.filter((span) => span.attributes["db.system"] === "postgresql");
    expect(sql.length, "SQL statements").to.be.greaterThan(1);
    for (const statement of sql) {
      expect(statement.kind).to.equal(clientKind);
      expect(statement.name, "named by keyword and table").to.match(/^(select|insert|update|delete|with)( [a-z_.]+)?$/);
    }
    expect(sql.map((span) => span.name)).to.include("insert otp_challenge");
    expect(spans.find((span) => span.name === "sms.send")!.attributes).to.deep.equal({ "portcullis.sms.provider": "webhook" });
    const limits = spans.filter((span) => span.name === "rate_limit");
    expect(limits.map((span) => span.attributes["portcullis.rate_limit.rule"])).to.include.members(["otp_send_phone", "otp_send_ip"]);
    const limitIds = new Set(limits.map((span) => span.spanId));
    expect(spans.some((span) => span.attributes["db.system"] === "redis" && limitIds.has(span.parentSpanId!)), "the limit's Redis command under it").to.equal(true);

    const verify = await traceOf(verifyId);
    expect(verify.door.traceId, "each call its own trace").to.not.equal(door.traceId);
    expectOneTree(verify.door, verify.spans);
    const redis = [...spans, ...verify.spans].filter((span) => span.attributes["db.system"] === "redis");
    expect(redis.length, "Redis commands (the shared limits)").to.be.greaterThan(0);
    for (const command of redis) expect(command.name).to.match(/^[a-z]+$/);

    expect(accessLine(sendId).trace_id).to.equal(door.traceId);
    expect(accessLine(verifyId).trace_id).to.equal(verify.door.traceId);
  });

  it("puts argon2 under a password sign-in", async () => {
    const email = `trace.${Date.now()}@example.com`;
    const password = `trace-${randomBytes(8).toString("hex")}`;
    secrets.push(password);
    const device = { deviceId: "trace-web", deviceType: "DEVICE_TYPE_WEB" };
    const registerId = `trace-register-${Date.now()}`;
    const registered = await connectCall(running.httpPort!, "/portcullis.v1.AuthService/Register", { email, password, device }, { "x-request-id": registerId });
    expect(registered.status).to.equal(200);
    const loginId = `trace-login-${Date.now()}`;
    const login = await connectCall(running.httpPort!, "/portcullis.v1.AuthService/Login", { email, password, device }, { "x-request-id": loginId });
    expect(login.status).to.equal(200);
    secrets.push(mail.codeFor(email), mail.tokenFor(email), login.json.tokens.accessToken, login.json.tokens.refreshToken);

    expect((await traceOf(registerId)).spans.map((span) => span.name)).to.include("argon2.hash");
    const { door, spans } = await traceOf(loginId);
    expect(spans.map((span) => span.name)).to.include.members(["argon2.verify", "rate_limit"]);
    expectOneTree(door, spans);
  });

  it("continues the trace of a caller that sends traceparent, and answers with the status on the span", async () => {
    const traceId = randomBytes(16).toString("hex");
    const parentId = randomBytes(8).toString("hex");
    const requestId = `trace-continued-${Date.now()}`;
    const answer = await connectCall(running.httpPort!, "/portcullis.v1.AuthService/GetProfile", {}, {
      traceparent: `00-${traceId}-${parentId}-01`,
      "x-request-id": requestId,
    });
    expect(answer.status).to.equal(401);
    const { door } = await traceOf(requestId);
    expect(door.traceId).to.equal(traceId);
    expect(door.parentSpanId).to.equal(parentId);
    expect(door.attributes["rpc.connect_rpc.error_code"]).to.equal("unauthenticated");
    expect(accessLine(requestId).trace_id).to.equal(traceId);
  });

  it("carries the trace from a gateway deployed apart to the gRPC instance", async () => {
    const traceId = randomBytes(16).toString("hex");
    const browserSpan = randomBytes(8).toString("hex");
    const requestId = `trace-forwarded-${Date.now()}`;
    const phone = newPhone();
    secrets.push(phone, phone.slice(1));
    const sent = await connectCall(gateway.httpPort!, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: phone }, {
      traceparent: `00-${traceId}-${browserSpan}-01`,
      "x-request-id": requestId,
    });
    expect(sent.status).to.equal(200);
    secrets.push(inbox.codeFor(phone));

    const { door, spans } = await traceOf(requestId);
    expect(door.traceId, "browser → gateway → gRPC: one trace").to.equal(traceId);
    expect(door.attributes["rpc.system"]).to.equal("grpc");
    expect(door.attributes["rpc.grpc.status_code"]).to.equal(0);
    const gatewaySpan = spans.find((span) => span.spanId === door.parentSpanId);
    expect(gatewaySpan, "the gRPC door's parent is the gateway's span").to.not.equal(undefined);
    expect(gatewaySpan!.kind).to.equal(serverKind);
    expect(gatewaySpan!.attributes["rpc.system"]).to.equal("connect_rpc");
    expect(gatewaySpan!.parentSpanId).to.equal(browserSpan);
    expect(spans.map((span) => span.name)).to.include("sms.send");
  });

  it("continues the trace in a service behind the guard, whose handler can pass it on", async () => {
    const onwards = new Headers();
    const handler: UnaryHandler = async () => {
      injectTraceContext(onwards);
      return {};
    };
    const guarded = await serveBehindGuard(running, stores, new Map([[KycService.method.submitEnhancedKyc, handler]]), {
      name: "kyc-desk",
      // Its callers here hold tokens for Portcullis itself.
      audiences: ["portcullis"],
      tracing: { endpoint: `${endpoint}/v1/traces`, serviceName: "downstream" },
    });
    const client = grpcClient(KycService, guarded.port);
    try {
      const traceId = randomBytes(16).toString("hex");
      const callerSpan = randomBytes(8).toString("hex");
      const requestId = `trace-guard-${Date.now()}`;
      const { token } = await mintUserToken(running, { kycLevel: 2 });
      secrets.push(token);
      const served = await client.call(
        "submitEnhancedKyc",
        { dueDiligence: { proofOfAddressRef: "uploads/proof.pdf", sourceOfFunds: SourceOfFunds.EMPLOYMENT } },
        { ...bearer(token), traceparent: `00-${traceId}-${callerSpan}-01`, "x-request-id": requestId },
      );
      expect(served.error).to.equal(undefined);
      const { door } = await traceOf(requestId);
      expect(door.traceId).to.equal(traceId);
      expect(door.parentSpanId).to.equal(callerSpan);
      expect(door.name).to.equal("portcullis.v1.KycService/SubmitEnhancedKyc");
      expect(onwards.get("traceparent"), "the handler's onward call is a child of the guard's span").to.equal(`00-${traceId}-${door.spanId}-01`);
    } finally {
      client.close();
      await guarded.close();
    }
    expect(tracingOn, "the guard's stop leaves the platform's tracing on").to.equal(true);
  });

  it("exports no code, password, token or full phone number in any span", async () => {
    await flushTracing();
    expect(secrets.length).to.be.greaterThan(8);
    const exported = receiver.spans();
    expect(exported.length).to.be.greaterThan(20);
    const values = exported.flatMap((span) => [span.name, ...Object.values(span.attributes).map(String)]).join("\n");
    for (const secret of secrets) expect(values).not.to.contain(secret);
    // And nowhere else in what was sent (resource attributes, events).
    for (const secret of secrets) expect(receiver.bodies.join("\n")).not.to.contain(secret);
  });
});

describe("Tracing configuration", () => {
  it("is off by default, and on with the standard OTLP variables", () => {
    expect(loadConfig({}).tracing).to.deep.equal({ endpoint: undefined, serviceName: "portcullis" });
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" }).tracing.endpoint).to.equal("http://collector:4318/v1/traces");
    const specific = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://a:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://b:4318/traces", OTEL_SERVICE_NAME: "auth" };
    expect(loadConfig(specific).tracing).to.deep.equal({ endpoint: "http://b:4318/traces", serviceName: "auth" });
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://a:4318", OTEL_SDK_DISABLED: "true" }).tracing.endpoint).to.equal(undefined);
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" })).to.throw(ConfigError, /OTEL_EXPORTER_OTLP_ENDPOINT/);
  });
});
