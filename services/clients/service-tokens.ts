import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { permissionDenied } from "../policy/refusals.js";
import type { AccessTokens } from "../tokens/access-token.js";
import type { ClientAuthentication, ClientProof } from "./client-authentication.js";

const event = "service_token.issue";

export interface IssuedServiceToken {
  token: string;
  expiresAt: Date;
  expiresInSeconds: number;
}

/**
 * IssueServiceToken: a service account proves itself and gets a short-lived
 * token for one of its audiences, carrying its permissions. The audience is
 * checked only once the caller is proven, so strangers learn nothing of
 * which audiences an account has.
 */
export class ServiceTokens {
  constructor(
    private readonly clients: ClientAuthentication,
    private readonly tokens: AccessTokens,
    private readonly ttlSeconds: number,
    /**
     * The per-account limit (rule "service_token_client"), applied once the
     * caller is proven: keyed by the name a caller only claims, it would let
     * anyone spend a service's budget and lock it out of tokens.
     */
    private readonly perAccountLimit: (clientId: string) => Promise<void>,
  ) {}

  async issue(clientId: string, proof: ClientProof, audience: string, origin: CallOrigin): Promise<IssuedServiceToken> {
    const issued = await this.clients.authenticate(clientId, proof, origin, event, async (tx, { account, method }) => {
      await this.perAccountLimit(account.name);
      const detail = { client_id: clientId, audience, method };
      if (!account.audiences.includes(audience)) {
        await audit(tx, origin, { event, outcome: "denied", detail: { ...detail, reason: "audience_not_allowed" } });
        return undefined;
      }
      const { token, expiresAt, tokenId } = await this.tokens.issue(
        {
          kind: "service",
          subject: account.name,
          sessionId: "",
          deviceId: "",
          sessionExpiresAt: 0,
          kycLevel: 0,
          kycStatus: "",
          permissions: account.permissions,
          amr: [],
        },
        { audience, ttlSeconds: this.ttlSeconds },
      );
      // The token's id (not a secret) ties its later use to this issuance.
      await audit(tx, origin, { event, outcome: "success", detail: { ...detail, jti: tokenId } });
      return { token, expiresAt, expiresInSeconds: this.ttlSeconds };
    });
    if (!issued) throw permissionDenied("AUDIENCE_NOT_ALLOWED", `this service account may not get tokens for "${audience}"`, { audience });
    return issued;
  }
}
