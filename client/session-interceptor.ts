import { getOption, isMessage, type DescMethod } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, type Interceptor, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import { AuthService, type RefreshTokenRequest } from "../gen/portcullis/v1/auth_service_pb.js";
import { TokenPairSchema } from "../gen/portcullis/v1/common_pb.js";
import { MfaService, type StepUpResponse } from "../gen/portcullis/v1/mfa_service_pb.js";
import { access, Caller } from "../gen/portcullis/v1/policy_pb.js";
import { PortcullisError, SessionEndedError } from "./errors.js";
import type { SessionKeeper } from "./session-keeper.js";
import type { StoredSession } from "./storage.js";
import { pairOf } from "./token-pair.js";

/** Every failure leaves the client typed; outermost, so that refreshes and retries inside it are covered too. */
export const typedErrors: Interceptor = (next) => async (request) => {
  try {
    return await next(request);
  } catch (e) {
    throw PortcullisError.from(e);
  }
};

/**
 * Sends the session's access token to the methods the contract does not make
 * public, refreshing it first when due and once more when the server finds it
 * expired or cannot verify it; stores the tokens of sign-ins, refreshes and
 * step-ups, and forgets them on Logout.
 */
export function sessionInterceptor(keeper: SessionKeeper): Interceptor {
  return (next) => async (request) => {
    if (request.stream) return next(request);
    let response: UnaryResponse;
    if (needsToken(request.method)) {
      const session = await keeper.fresh();
      // No request that can only be refused for want of a token.
      if (!session) throw SessionEndedError.because("TOKEN_MISSING");
      response = await withToken(keeper, session, (next as (r: UnaryRequest) => Promise<UnaryResponse>), request);
    } else {
      response = (await next(request)) as UnaryResponse;
    }
    await remember(keeper, request, response);
    return response;
  };
}

const needs = new Map<DescMethod, boolean>();

/** The contract (`portcullis.v1.access`) is the one place that says which methods take a token. */
function needsToken(method: DescMethod): boolean {
  let token = needs.get(method);
  if (token === undefined) needs.set(method, (token = getOption(method, access).caller !== Caller.PUBLIC));
  return token;
}

async function withToken(keeper: SessionKeeper, session: StoredSession, next: (r: UnaryRequest) => Promise<UnaryResponse>, request: UnaryRequest) {
  for (let retried = false; ; retried = true) {
    request.header.set("Authorization", `Bearer ${session.accessToken}`);
    try {
      return await next(request);
    } catch (e) {
      const error = PortcullisError.from(e);
      if (error.code !== Code.Unauthenticated) throw error;
      // The client's clock may be wrong, and a token signed with a key the server has let go reads as invalid
      // while the refresh token is good: a new token, once.
      if ((error.reason === "TOKEN_EXPIRED" || error.reason === "TOKEN_INVALID") && !retried) {
        session = await keeper.refresh(session);
        continue;
      }
      if (error.reason === "SESSION_REVOKED" || error.reason === "TOKEN_INVALID") throw await keeper.refused(session, error);
      throw error;
    }
  }
}

async function remember(keeper: SessionKeeper, request: UnaryRequest, response: UnaryResponse): Promise<void> {
  if (request.method === AuthService.method.logout) {
    await keeper.end("SIGNED_OUT");
    return;
  }
  if (request.method === MfaService.method.stepUp) {
    const { accessToken, accessTokenExpireTime } = response.message as StepUpResponse;
    if (accessToken && accessTokenExpireTime) await keeper.steppedUp(accessToken, timestampMs(accessTokenExpireTime));
    return;
  }
  const { tokens, sessionId, user } = response.message as { tokens?: unknown; sessionId?: unknown; user?: { userId?: unknown } };
  if (!isMessage(tokens, TokenPairSchema)) return;
  if (request.method === AuthService.method.refreshToken) {
    await keeper.refreshedByApp((request.message as RefreshTokenRequest).refreshToken, pairOf(tokens));
    return;
  }
  await keeper.signedIn({
    ...pairOf(tokens),
    sessionId: typeof sessionId === "string" && sessionId ? sessionId : undefined,
    userId: typeof user?.userId === "string" && user.userId ? user.userId : undefined,
  });
}
