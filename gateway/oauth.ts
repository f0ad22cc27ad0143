import type { IncomingMessage, ServerResponse } from "node:http";
import { create, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeJwt } from "jose";
import type { Dispatch } from "../services/platform/incoming-call.js";
import { actorOf } from "../services/tokens/access-token.js";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { TokenService } from "../gen/portcullis/v1/token_service_pb.js";

export interface OAuthOptions {
  /** The same dispatch the Connect routes use: in-process, or forwarded over gRPC, so the chain runs once per call. */
  dispatch: Dispatch;
  /** JWT_ISSUER. */
  issuer: string;
  /** PUBLIC_URL, the base of the endpoints the metadata names. */
  publicUrl: string;
  /** JWT_AUDIENCE: a client that exchanges or introspects first gets a service token for Portcullis itself. */
  audience: string;
  maxRequestBytes: number;
}

const oauthPaths = {
  token: "/oauth2/token",
  introspect: "/oauth2/introspect",
  metadata: "/.well-known/oauth-authorization-server",
} as const;

const grants = {
  clientCredentials: "client_credentials",
  tokenExchange: "urn:ietf:params:oauth:grant-type:token-exchange",
};
const accessTokenType = "urn:ietf:params:oauth:token-type:access_token";
/** RFC 8693 §3: our access tokens are JWTs, so either name will do for one. */
const subjectTokenTypes = new Set([accessTokenType, "urn:ietf:params:oauth:token-type:jwt"]);
const jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const authMethods = ["client_secret_basic", "client_secret_post", "private_key_jwt"];
const assertionAlgorithms = ["ES256", "RS256", "PS256", "EdDSA"];

/** An RFC 6749 §5.2 answer. */
class OAuthError extends Error {
  constructor(
    readonly error: string,
    description: string,
    readonly status = 400,
    readonly headers: Record<string, string> = {},
  ) {
    super(description);
  }
}

/** The request went away (or timed out) while its body was still coming: nobody is left to answer. */
class RequestGone extends Error {}

type Form = Map<string, string>;

/** A client of the token endpoint, with what IssueServiceToken takes as its proof. */
type Client = { via: "basic" | "post" | "assertion"; request: { clientId: string; clientSecret?: string; clientAssertion?: string } };
/** Introspection also takes a service token the caller already holds. */
type Caller = Client | { via: "bearer"; token: string };

/**
 * The OAuth 2.0 face of TokenService for stock client libraries: the token
 * endpoint (RFC 6749 client_credentials, RFC 8693 token exchange), RFC 7662
 * introspection and RFC 8414 metadata. Each form is translated into
 * TokenService calls through the gateway's dispatch, so limits, audit and
 * every check are the RPCs' own. Server-to-server: no CORS.
 */
export function createOAuth(options: OAuthOptions) {
  const metadata = {
    issuer: options.issuer,
    token_endpoint: `${options.publicUrl}${oauthPaths.token}`,
    introspection_endpoint: `${options.publicUrl}${oauthPaths.introspect}`,
    jwks_uri: `${options.publicUrl}/.well-known/jwks.json`,
    grant_types_supported: [grants.clientCredentials, grants.tokenExchange],
    // RFC 8414 §2 requires the member; there is no authorization endpoint, so no response type.
    response_types_supported: [],
    token_endpoint_auth_methods_supported: authMethods,
    token_endpoint_auth_signing_alg_values_supported: assertionAlgorithms,
    introspection_endpoint_auth_methods_supported: authMethods,
    introspection_endpoint_auth_signing_alg_values_supported: assertionAlgorithms,
  };

  async function call<I extends DescMessage, O extends DescMessage>(
    req: IncomingMessage,
    signal: AbortSignal,
    method: DescMethod & { input: I; output: O },
    request: MessageInitShape<I>,
    bearer?: string,
  ): Promise<MessageShape<O>> {
    const answer = await options.dispatch(
      {
        method,
        door: "gateway",
        peer: req.socket.remoteAddress ?? "",
        // Basic credentials travel in the request message, never as a header to forward.
        header: (name) => (name === "authorization" ? bearer && `Bearer ${bearer}` : headerValue(req, name)),
        signal,
      },
      create(method.input, request),
    );
    return create(method.output, answer as MessageInitShape<O>);
  }

  /** A service token for Portcullis itself, which ExchangeToken and IntrospectToken take from service callers. */
  async function portcullisToken(req: IncomingMessage, signal: AbortSignal, caller: Caller, purpose: string): Promise<string> {
    if (caller.via === "bearer") return caller.token;
    try {
      const issued = await call(req, signal, TokenService.method.issueServiceToken, { ...caller.request, audience: options.audience });
      return issued.accessToken;
    } catch (error) {
      if (reasonOf(error) === "AUDIENCE_NOT_ALLOWED") {
        throw new OAuthError("unauthorized_client", `this service account needs ${options.audience} among its audiences to ${purpose}`);
      }
      throw fromConnect(error, caller);
    }
  }

  async function token(req: IncomingMessage, signal: AbortSignal, form: Form): Promise<unknown> {
    const grant = form.get("grant_type");
    if (!grant) throw new OAuthError("invalid_request", "grant_type is required");
    if (grant !== grants.clientCredentials && grant !== grants.tokenExchange) {
      throw new OAuthError("unsupported_grant_type", `grant_type must be ${grants.clientCredentials} or ${grants.tokenExchange}`);
    }
    const caller = clientOf(req, form);
    if (grant === grants.clientCredentials) {
      const audience = audienceOf(form);
      try {
        const issued = await call(req, signal, TokenService.method.issueServiceToken, { ...caller.request, audience });
        return { access_token: issued.accessToken, token_type: "Bearer", expires_in: issued.expiresIn };
      } catch (error) {
        throw fromConnect(error, caller);
      }
    }
    const subjectToken = form.get("subject_token");
    if (!subjectToken) throw new OAuthError("invalid_request", "subject_token is required");
    const subjectType = form.get("subject_token_type");
    if (!subjectType || !subjectTokenTypes.has(subjectType)) throw new OAuthError("invalid_request", `subject_token_type must be ${accessTokenType}`);
    const requested = form.get("requested_token_type");
    if (requested && !subjectTokenTypes.has(requested)) throw new OAuthError("invalid_request", `requested_token_type must be ${accessTokenType}`);
    if (form.has("actor_token")) throw new OAuthError("invalid_request", "actor_token is not supported: the authenticated client is the actor");
    const audience = audienceOf(form);
    const serviceToken = await portcullisToken(req, signal, caller, "exchange tokens");
    try {
      const issued = await call(req, signal, TokenService.method.exchangeToken, { subjectToken, audience }, serviceToken);
      return { access_token: issued.accessToken, issued_token_type: issued.issuedTokenType, token_type: "Bearer", expires_in: issued.expiresIn };
    } catch (error) {
      throw fromConnect(error, caller);
    }
  }

  async function introspect(req: IncomingMessage, signal: AbortSignal, form: Form): Promise<unknown> {
    const token = form.get("token");
    if (!token) throw new OAuthError("invalid_request", "token is required");
    const caller = introspectionCallerOf(req, form);
    const serviceToken = await portcullisToken(req, signal, caller, "introspect tokens");
    let answer;
    try {
      answer = await call(req, signal, TokenService.method.introspectToken, { token }, serviceToken);
    } catch (error) {
      throw fromConnect(error, caller);
    }
    if (!answer.active) return { active: false };
    return {
      active: true,
      token_type: "Bearer",
      iss: answer.iss,
      sub: answer.sub,
      aud: answer.aud,
      exp: Number(answer.exp),
      iat: Number(answer.iat),
      jti: answer.jti,
      svc: answer.svc,
      perm: answer.perm,
      ...(answer.svc ? { client_id: answer.sub } : { sid: answer.sid, kyc_lvl: answer.kycLvl, amr: answer.amr }),
      // RFC 7662's client_id is the client that asked for the token: for an exchanged one, the acting service.
      // IntrospectToken names only that one; the token, found active and so verified, holds the whole chain.
      ...(answer.actSub ? { act: actorOf(decodeJwt(token).act), client_id: answer.actSub } : {}),
    };
  }

  return {
    handles: (path: string) => path === oauthPaths.token || path === oauthPaths.introspect || path === oauthPaths.metadata,

    async serve(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
      if (path === oauthPaths.metadata) {
        if (req.method !== "GET" && req.method !== "HEAD") return sendJson(res, 405, { error: "invalid_request", error_description: "use GET" }, { Allow: "GET, HEAD" });
        return sendJson(res, 200, metadata, { "Cache-Control": "public, max-age=300" });
      }
      // The answers carry tokens: RFC 6749 §5.1.
      const noStore = { "Cache-Control": "no-store", Pragma: "no-cache" };
      const gone = new AbortController();
      res.once("close", () => gone.abort());
      try {
        if (req.method !== "POST") throw new OAuthError("invalid_request", "use POST", 405, { Allow: "POST" });
        const form = await readForm(req, options.maxRequestBytes);
        const answer = await (path === oauthPaths.token ? token : introspect)(req, gone.signal, form);
        sendJson(res, 200, answer, noStore);
      } catch (error) {
        if (error instanceof RequestGone) return;
        if (!(error instanceof OAuthError)) throw error;
        sendJson(res, error.status, { error: error.error, error_description: asciiDescription(error.message) }, { ...noStore, ...error.headers });
      }
    },
  };
}

/** A service token sent as `Authorization: Bearer`, or client authentication as at the token endpoint. */
function introspectionCallerOf(req: IncomingMessage, form: Form): Caller {
  const bearer = /^Bearer +(\S+) *$/i.exec(headerValue(req, "authorization") ?? "");
  if (!bearer) return clientOf(req, form);
  if (form.has("client_secret") || form.has("client_assertion")) throw new OAuthError("invalid_request", "use one client authentication method");
  return { via: "bearer", token: bearer[1]! };
}

/**
 * RFC 6749 §2.3: one way of authenticating per request — HTTP Basic (the id
 * and secret form-encoded first, §2.3.1), the secret in the form, or a JWT
 * client assertion (RFC 7523, its `sub` naming the client when client_id is
 * absent).
 */
function clientOf(req: IncomingMessage, form: Form): Client {
  const authorization = headerValue(req, "authorization");
  const basic = authorization ? /^Basic +([A-Za-z0-9+/=]+) *$/i.exec(authorization) : null;
  if (authorization && !basic) throw invalidClient("basic", "use HTTP Basic or credentials in the form");
  const secret = form.get("client_secret");
  const assertion = form.get("client_assertion");
  const methods = [basic, secret, assertion].filter(Boolean).length;
  if (methods > 1) throw new OAuthError("invalid_request", "use one client authentication method");
  if (methods === 0) throw invalidClient("basic", "client authentication is required");
  const formId = form.get("client_id");
  if (basic) {
    const decoded = Buffer.from(basic[1]!, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    const clientId = colon < 0 ? undefined : formDecode(decoded.slice(0, colon));
    const clientSecret = colon < 0 ? undefined : formDecode(decoded.slice(colon + 1));
    if (!clientId || !clientSecret) throw invalidClient("basic", "the Basic credentials are not client_id:client_secret");
    if (formId && formId !== clientId) throw new OAuthError("invalid_request", "client_id differs from the one in the Authorization header");
    return { via: "basic", request: { clientId, clientSecret } };
  }
  if (secret) {
    if (!formId) throw new OAuthError("invalid_request", "client_id is required with client_secret");
    return { via: "post", request: { clientId: formId, clientSecret: secret } };
  }
  if (form.get("client_assertion_type") !== jwtBearerAssertion) {
    throw new OAuthError("invalid_request", `client_assertion_type must be ${jwtBearerAssertion}`);
  }
  const clientId = formId ?? assertedClient(assertion!);
  if (!clientId) throw invalidClient("assertion", "client authentication failed");
  return { via: "assertion", request: { clientId, clientAssertion: assertion! } };
}

/** Only to know whom to look up: the assertion is verified by IssueServiceToken, with that client's keys. */
function assertedClient(assertion: string): string | undefined {
  try {
    const { sub } = decodeJwt(assertion);
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** RFC 8693 `audience`, or RFC 8707 `resource` naming the same service. */
function audienceOf(form: Form): string {
  const audience = form.get("audience");
  const resource = form.get("resource");
  if (audience && resource && audience !== resource) throw new OAuthError("invalid_target", "audience and resource name different services");
  const target = audience ?? resource;
  if (!target) throw new OAuthError("invalid_request", "audience (or resource) is required");
  return target;
}

function invalidClient(via: Caller["via"], description: string): OAuthError {
  // RFC 6749 §5.2: a client that tried the Authorization header is challenged in it.
  const challenge = via === "bearer" ? `Bearer realm="portcullis", error="invalid_token"` : `Basic realm="portcullis"`;
  return new OAuthError("invalid_client", description, 401, via === "basic" || via === "bearer" ? { "WWW-Authenticate": challenge } : {});
}

function reasonOf(error: unknown): string | undefined {
  return error instanceof ConnectError ? error.findDetails(ErrorInfoSchema)[0]?.reason : undefined;
}

/** A TokenService refusal in RFC 6749 §5.2 (and RFC 8693, RFC 8707) terms. */
function fromConnect(error: unknown, caller: Caller): OAuthError {
  const connectError = ConnectError.from(error);
  const description = connectError.rawMessage;
  switch (connectError.code) {
    case Code.InvalidArgument: {
      const fields = connectError.findDetails(BadRequestSchema).flatMap((badRequest) => badRequest.fieldViolations.map((v) => v.field));
      if (fields.includes("subject_token")) return new OAuthError("invalid_grant", description);
      if (fields.includes("audience")) return new OAuthError("invalid_target", description);
      if (fields.includes("client_id")) return invalidClient(caller.via, "client authentication failed");
      return new OAuthError("invalid_request", description);
    }
    case Code.Unauthenticated:
      return invalidClient(caller.via, description);
    case Code.PermissionDenied:
      return new OAuthError(reasonOf(connectError) === "AUDIENCE_NOT_ALLOWED" ? "invalid_target" : "unauthorized_client", description);
    case Code.ResourceExhausted:
      // RFC 6749 has no code for it: its generic one, with the status and Retry-After saying what happened.
      return new OAuthError("invalid_request", description, 429, { "Retry-After": connectError.metadata.get("retry-after") ?? "1" });
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return new OAuthError("temporarily_unavailable", description, 503, { "Retry-After": "1" });
    default:
      return new OAuthError("server_error", description, 500);
  }
}

/**
 * The form, each parameter once (RFC 6749 §3.2); a parameter sent empty
 * counts as absent. The body is held to the gateway's size limit; Node's
 * request timeout bounds how long it may take.
 */
async function readForm(req: IncomingMessage, maxBytes: number): Promise<Form> {
  const type = (headerValue(req, "content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") {
    throw new OAuthError("invalid_request", "send the parameters as application/x-www-form-urlencoded");
  }
  const body = await readBody(req, maxBytes);
  const form: Form = new Map();
  for (const [name, value] of new URLSearchParams(body.toString("utf8"))) {
    if (form.has(name)) throw new OAuthError("invalid_request", `${name} is repeated`);
    if (value !== "") form.set(name, value);
  }
  return form;
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const tooLarge = () => new OAuthError("invalid_request", `the request body is larger than ${maxBytes} bytes`, 413, { Connection: "close" });
  if (Number(headerValue(req, "content-length") ?? 0) > maxBytes) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (outcome: () => void) => {
      req.off("data", onData).off("end", onEnd).off("close", onClose);
      outcome();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      chunks.push(chunk);
      // The rest is left unread: the answer closes the connection.
      if (size > maxBytes) stop(() => (req.pause(), reject(tooLarge())));
    };
    const onEnd = () => stop(() => resolve(Buffer.concat(chunks)));
    const onClose = () => stop(() => reject(new RequestGone()));
    req.on("data", onData).once("end", onEnd).once("close", onClose).once("error", () => undefined);
  });
}

/** application/x-www-form-urlencoded decoding of one value; undefined when it is not valid. */
function formDecode(value: string): string | undefined {
  try {
    return decodeURIComponent(value.replace(/\+/g, " "));
  } catch {
    return undefined;
  }
}

/** RFC 6749 §5.2 allows error_description only printable ASCII without `"` and `\`. */
function asciiDescription(description: string): string {
  return description.replace(/"/g, "'").replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, "");
}

/** A request header's first value. */
export function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}
