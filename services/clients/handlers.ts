import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "../kernel/call.js";
import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";
import type { Introspection } from "./introspection.js";
import type { ServiceTokens } from "./service-tokens.js";
import type { TokenExchange } from "./token-exchange.js";

/** What TokenService's handlers call. */
export interface TokenDomain {
  serviceTokens: ServiceTokens;
  exchange: TokenExchange;
  introspection: Introspection;
}

export function tokenHandlers({ serviceTokens, exchange, introspection }: TokenDomain): ServiceHandlers<typeof TokenService> {
  return {
    async issueServiceToken(request, call) {
      // The contract lets exactly one of the two through.
      const proof = request.clientAssertion ? { assertion: request.clientAssertion } : { secret: request.clientSecret };
      const issued = await serviceTokens.issue(request.clientId, proof, request.audience, call);
      return {
        accessToken: issued.token,
        tokenType: "Bearer",
        expiresIn: issued.expiresInSeconds,
        expireTime: timestampFromDate(issued.expiresAt),
      };
    },
    async exchangeToken(request, call) {
      const issued = await exchange.exchange(request.subjectToken, request.audience, call);
      return {
        accessToken: issued.token,
        tokenType: "Bearer",
        expiresIn: issued.expiresInSeconds,
        issuedTokenType: "urn:ietf:params:oauth:token-type:access_token",
      };
    },
    async introspectToken(request, call) {
      const found = await introspection.introspect(request.token, call);
      if (!found) return { active: false };
      const { principal } = found;
      return {
        active: true,
        sub: principal.subject,
        sid: principal.sessionId,
        aud: found.audience,
        exp: BigInt(principal.expiresAt),
        iat: BigInt(principal.issuedAt),
        iss: found.issuer,
        kycLvl: principal.kycLevel,
        perm: [...principal.permissions],
        amr: [...principal.amr],
        actSub: principal.actor ?? "",
        svc: principal.kind === "service",
        jti: principal.tokenId,
      };
    },
  };
}
