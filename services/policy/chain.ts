import { createHmac } from "node:crypto";
import type { DescMethod, Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Span } from "@opentelemetry/api";
import type { CallContext, CallOrigin, CaptchaRefusal, LimitHit, Principal, UnaryHandler } from "../kernel/call.js";
import { invalidArgument, rateLimited, unauthenticated, unavailable } from "../kernel/errors.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { isDatabaseUnavailable } from "../platform/database-errors.js";
import type { RateLimitRule } from "../platform/config.js";
import { requestIdOf, type IncomingCall } from "../platform/incoming-call.js";
import { accessLogger, type Logger } from "../platform/logger.js";
import { callsInFlight, rateLimitRefusals, rpcCalls, rpcDuration, tokensRefused } from "../platform/metrics.js";
import { endDoorSpan, inDoorSpan, recordedTraceId, tracingOn } from "../platform/tracing.js";
import { Caller, CaptchaRequirement, RateLimitKey } from "../../gen/portcullis/v1/policy_pb.js";
import type { MethodLimit, MethodPolicy } from "./access.js";
import type { CaptchaGate } from "./captcha-gate.js";
import type { ClientIpResolver } from "./client-ip.js";
import { consumeRule, type RateLimiter } from "./rate-limiter.js";
import { captchaRequired, kycLevelRequired, permissionDenied, stepUpRequired } from "./refusals.js";
import { createRequestValidator, type RequestValidator } from "./request-validation.js";

/**
 * Decides whether a verified token's session may still be used (revocation,
 * expiry), and returns the principal as it stands now (a KYC level lowered
 * since the token was issued counts at once).
 */
export interface SessionGate {
  check(principal: Principal): Principal;
}

/**
 * The one form of a phone number or an email that every spelling of it
 * shares, as the handlers will use it: limits keyed by them count the person,
 * not the spelling.
 */
export interface LimitKeyForms {
  phone(raw: string): string;
  email(raw: string): string;
}

export interface ChainDeps {
  policies: Map<DescMethod, MethodPolicy>;
  limiter: RateLimiter;
  tokens: { verify(token: string): Promise<Principal> };
  sessions: SessionGate;
  clientIp: ClientIpResolver;
  limitKeyForms: LimitKeyForms;
  /** Keys the hashes that stand for phone numbers and emails in rate-limit keys. */
  limitKeySecret: Buffer;
  /** Told of every refusal by a rate limit, for the audit log. */
  onLimited: (hit: LimitHit) => void;
  /** Checks the methods that declare `captcha`; without it (CAPTCHA_PROVIDER=none) none is asked for. */
  captcha?: CaptchaGate;
  /** Told of every call refused for want of a passing captcha, for the audit log. */
  onCaptchaRefused?: (refusal: CaptchaRefusal) => void;
  logger: Logger;
}

type Door = IncomingCall["door"];

/** A method's series at one door, looked up once: prom-client's children save hashing the labels again per call. */
interface CallSeries {
  duration: ReturnType<typeof rpcDuration.labels>;
  /** By status code name, made on a code's first call. */
  calls: Map<string, ReturnType<typeof rpcCalls.labels>>;
}

/**
 * The one interceptor chain. Both doors call `run`; it applies, in order:
 * request id and logging, client identity, rate limits, captcha, authentication, KYC
 * level, permissions, the request's field rules, then the handler. The policy
 * comes from the method's `access` option and the field rules from its
 * request message's `buf.validate` options, both read once at start-up.
 */
export class Chain {
  private readonly accessLog: Logger;
  private readonly validate: RequestValidator;
  /** Keyed by the policy, so only methods with one get series: the label values stay bounded. */
  private readonly series = new Map<MethodPolicy, Record<Door, CallSeries>>();

  constructor(private readonly deps: ChainDeps) {
    this.accessLog = accessLogger(deps.logger);
    this.validate = createRequestValidator([...deps.policies.keys()].map((method) => method.input));
  }

  run(incoming: IncomingCall, request: Message, handler: UnaryHandler): Promise<unknown> {
    if (!tracingOn) return this.serve(incoming, request, handler, undefined);
    return inDoorSpan(incoming, (span) => this.serve(incoming, request, handler, span));
  }

  private async serve(incoming: IncomingCall, request: Message, handler: UnaryHandler, span: Span | undefined): Promise<unknown> {
    const started = performance.now();
    const policy = this.deps.policies.get(incoming.method);
    const requestId = requestIdOf(incoming.header("x-request-id"));
    const clientIp = this.deps.clientIp.resolve(incoming.peer, incoming.header("x-forwarded-for"));
    let principal: Principal | undefined;
    let status = "ok";
    callsInFlight[incoming.door]++;
    try {
      if (!policy) throw new ConnectError("no access policy for this method", Code.PermissionDenied);
      const call: { -readonly [K in keyof CallContext]: CallContext[K] } = {
        path: policy.path,
        requestId,
        clientIp,
        userAgent: (incoming.header("user-agent") ?? "").slice(0, 512),
        principal: undefined,
      };
      await this.enforceLimits(policy.anonymousLimits, request, call, undefined);
      // After the limits, so a bot without tokens still spends them; before authentication, which it might otherwise probe.
      const failureKeys = this.deps.captcha?.applies(policy.captcha, clientIp) ? await this.checkCaptcha(policy, incoming, request, call) : undefined;
      if (policy.caller !== Caller.PUBLIC) {
        principal = call.principal = await this.authenticate(policy, incoming.header("authorization"));
        await this.enforceLimits(policy.userLimits, request, call, principal);
        authorize(policy, principal);
      }
      // After the access checks, so a caller who may not call the method learns nothing of its rules.
      const violations = this.validate(incoming.method.input, request);
      if (violations.length > 0) throw invalidArgument(violations);
      return failureKeys ? await this.countingFailures(handler, request, call, failureKeys) : await handler(request, call);
    } catch (error) {
      const connectError = this.toConnectError(error, requestId);
      status = Code[connectError.code];
      throw connectError;
    } finally {
      const ms = performance.now() - started;
      callsInFlight[incoming.door]--;
      if (policy) this.record(policy, incoming.door, status, ms);
      this.accessLog.info(
        {
          rid: requestId,
          trace_id: recordedTraceId(span),
          method: policy?.path ?? incoming.method.name,
          status,
          ms: Math.round(ms * 100) / 100,
          ip: clientIp,
          sub: principal?.subject,
        },
        "call",
      );
      if (span) endDoorSpan(span, incoming.door, status === "ok" ? undefined : Code[status as keyof typeof Code], requestId);
    }
  }

  private record(policy: MethodPolicy, door: Door, status: string, ms: number): void {
    let byDoor = this.series.get(policy);
    if (!byDoor) {
      const seriesAt = (at: Door): CallSeries => ({ duration: rpcDuration.labels(policy.path, at), calls: new Map() });
      this.series.set(policy, (byDoor = { grpc: seriesAt("grpc"), gateway: seriesAt("gateway") }));
    }
    const series = byDoor[door];
    series.duration.observe(ms / 1000);
    let calls = series.calls.get(status);
    if (!calls) series.calls.set(status, (calls = rpcCalls.labels(policy.path, door, status)));
    calls.inc();
  }

  private async authenticate(policy: MethodPolicy, authorization: string | undefined): Promise<Principal> {
    try {
      const match = authorization && /^Bearer ([\w-]+\.[\w-]+\.[\w-]+)$/i.exec(authorization);
      if (!match) {
        throw unauthenticated(authorization ? "TOKEN_INVALID" : "TOKEN_MISSING", "send an access token as: Authorization: Bearer <token>");
      }
      const principal = await this.deps.tokens.verify(match[1]!);
      const wanted = policy.caller === Caller.SERVICE ? "service" : "user";
      if (principal.kind !== wanted) {
        tokensRefused.labels("WRONG_CALLER").inc();
        throw permissionDenied("WRONG_CALLER", `this method is for ${wanted} tokens`);
      }
      return principal.kind === "user" ? this.deps.sessions.check(principal) : principal;
    } catch (error) {
      // The ErrorInfo reasons of unauthenticated(), a fixed few; not a store that is down (UNAVAILABLE).
      if (error instanceof ConnectError && error.code === Code.Unauthenticated) {
        const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
        if (reason) tokensRefused.labels(reason).inc();
      }
      throw error;
    }
  }

  /**
   * One rule after another: a call refused by one rule does not spend the
   * next. With leased limits most of these resolve without a Redis round trip.
   */
  private async enforceLimits(limits: MethodLimit[], request: Message, call: CallOrigin, principal: Principal | undefined) {
    for (const limit of limits) {
      const key = this.limitKey(limit, request, call.clientIp, principal);
      // A field-keyed rule counts the requests that name someone: an empty field would make every caller share one key.
      if (key === undefined) continue;
      await this.consume(limit.name, limit.rule, key, call, principal);
      // An IPv6 client could move to any of the 65,536 /64s of its /48: together they count against a looser rule.
      const wideKey = limit.wideRule && this.deps.clientIp.wideLimitKey(call.clientIp);
      if (wideKey) await this.consume(limit.name, limit.wideRule!, wideKey, call, principal);
    }
  }

  private async consume(name: string, rule: RateLimitRule, key: string, call: CallOrigin, principal: Principal | undefined): Promise<void> {
    const decision = await consumeRule(this.deps.limiter, name, rule, key, this.deps.logger);
    if (decision.allowed) return;
    rateLimitRefusals.labels(name).inc();
    const { requestId, clientIp, userAgent } = call;
    this.deps.onLimited({ requestId, clientIp, userAgent, rule: name, key, userId: principal?.subject });
    throw rateLimited(name, decision.retryAfterMs);
  }

  /**
   * Refuses the call unless the captcha the method declares is satisfied.
   * Returns, for AFTER_FAILURES methods, the keys its failed calls count by:
   * the caller's IP and, when the request names one, the phone number or email.
   */
  private async checkCaptcha(policy: MethodPolicy, incoming: IncomingCall, request: Message, call: CallContext): Promise<string[] | undefined> {
    const gate = this.deps.captcha!;
    let failureKeys: string[] | undefined;
    if (policy.captcha === CaptchaRequirement.AFTER_FAILURES) {
      failureKeys = [`captcha:${policy.path}:ip:${this.deps.clientIp.limitKey(call.clientIp)}`];
      const identifier = policy.captchaIdentifier && this.identifierKey(policy.captchaIdentifier.key, policy.captchaIdentifier.field, request);
      if (identifier) failureKeys.push(`captcha:${policy.path}:id:${identifier}`);
    }
    const verdict = await gate.check(policy.captcha, incoming.header("x-captcha-token"), call.clientIp, failureKeys ?? []);
    if (verdict === "passed") return failureKeys;
    const { provider, siteKey } = gate.verifier;
    const { requestId, clientIp, userAgent } = call;
    this.deps.onCaptchaRefused?.({ requestId, clientIp, userAgent, method: policy.path, provider, cause: verdict });
    if (verdict === "unavailable") throw unavailable("the captcha could not be checked; retry shortly");
    throw captchaRequired(provider, siteKey, verdict);
  }

  /** A wrong credential or code from the handler counts toward asking this caller, or for this person, for a captcha. */
  private async countingFailures(handler: UnaryHandler, request: Message, call: CallContext, failureKeys: string[]): Promise<unknown> {
    try {
      return await handler(request, call);
    } catch (error) {
      if (error instanceof ConnectError && (error.code === Code.Unauthenticated || error.code === Code.InvalidArgument)) {
        await this.deps.captcha!.failed(failureKeys);
      }
      throw error;
    }
  }

  private limitKey(limit: MethodLimit, request: Message, clientIp: string, principal: Principal | undefined): string | undefined {
    switch (limit.key) {
      case RateLimitKey.IP:
        return this.deps.clientIp.limitKey(clientIp);
      case RateLimitKey.USER:
        return principal!.subject;
      case RateLimitKey.GLOBAL:
        return "*";
      default:
        return this.identifierKey(limit.key, limit.field!, request);
    }
  }

  /** In the form the handlers use, so every spelling shares one key; hashed, so Redis never holds them in clear. */
  private identifierKey(key: RateLimitKey, field: string, request: Message): string | undefined {
    const raw = String((request as unknown as Record<string, unknown>)[field] ?? "");
    if (raw.trim() === "") return undefined;
    const canonical = key === RateLimitKey.PHONE ? this.deps.limitKeyForms.phone(raw) : this.deps.limitKeyForms.email(raw);
    return createHmac("sha256", this.deps.limitKeySecret).update(canonical).digest("base64url").slice(0, 22);
  }

  private toConnectError(error: unknown, requestId: string): ConnectError {
    if (error instanceof ConnectError) return error;
    // Not our bug: the database is down or dropped the connection, and a retry may well succeed.
    if (isDatabaseUnavailable(error)) {
      this.deps.logger.warn({ err: error, rid: requestId }, "database unavailable");
      return new ConnectError(`the service is briefly unavailable; retry shortly (request id ${requestId})`, Code.Unavailable);
    }
    this.deps.logger.error({ err: error, rid: requestId }, "unexpected error");
    return new ConnectError(`internal error (request id ${requestId})`, Code.Internal);
  }
}

function authorize(policy: MethodPolicy, principal: Principal): void {
  if (principal.kycLevel < policy.minKycLevel) throw kycLevelRequired(policy.minKycLevel, principal.kycLevel);
  // An account without a second factor could never step up: it meets min_aal at level 1, as policy.proto says.
  if (policy.minAal > 1 && principal.mfaEnrolled && !stepUpMet(policy, principal)) {
    throw stepUpRequired(policy.minAal, policy.maxFactorAgeSeconds);
  }
  const missing = policy.permissions.filter((p) => !principal.permissions.includes(p));
  if (missing.length > 0) {
    throw permissionDenied("PERMISSION_REQUIRED", `this call needs the permission ${missing.join(", ")}`, {
      permissions: missing.join(","),
    });
  }
}

function stepUpMet(policy: MethodPolicy, principal: Principal): boolean {
  if ((principal.aal ?? 1) < policy.minAal) return false;
  return policy.maxFactorAgeSeconds === 0 || Date.now() / 1000 - (principal.mfaTime ?? 0) <= policy.maxFactorAgeSeconds;
}
