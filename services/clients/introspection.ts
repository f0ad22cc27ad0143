import { Code, ConnectError } from "../kernel/errors.js";
import type { Sql } from "../platform/database.js";
import { tokenIntrospections } from "../platform/metrics.js";
import type { InspectedToken, TokenVerifier } from "../tokens/access-token.js";
import { serviceAccountStore } from "./store.js";
import type { SessionCheck } from "./token-exchange.js";

/**
 * RFC 7662 for services in any language: is this token good right now? Its
 * signature and expiry, for whichever audience it was issued; a user's
 * session as the revocation feed has it (the same in-memory state every call
 * is checked against, so an answer is never staler than the feed), with KYC
 * level and permissions as they stand; a service's account still enabled.
 * Hot and read-only: counted, not audited.
 */
export class Introspection {
  constructor(
    private readonly sql: Sql,
    private readonly tokens: TokenVerifier,
    private readonly revocations: SessionCheck,
  ) {}

  /** The token as it stands now, or undefined when it is not good (RFC 7662 says only `active: false`). */
  async introspect(token: string): Promise<InspectedToken | undefined> {
    const found = await this.current(token);
    tokenIntrospections.labels(found ? "true" : "false").inc();
    return found;
  }

  private async current(token: string): Promise<InspectedToken | undefined> {
    let inspected: InspectedToken;
    try {
      inspected = await this.tokens.inspect(token, undefined);
    } catch (error) {
      if (isUnauthenticated(error)) return undefined;
      throw error;
    }
    const { principal } = inspected;
    if (principal.kind === "service") {
      const account = await serviceAccountStore.find(this.sql, principal.subject);
      return account && !account.disable_time ? inspected : undefined;
    }
    try {
      return { ...inspected, principal: this.revocations.check(principal) };
    } catch (error) {
      // A feed that cannot confirm revocations answers UNAVAILABLE: the caller retries rather than sign a user out.
      if (isUnauthenticated(error)) return undefined;
      throw error;
    }
  }
}

function isUnauthenticated(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unauthenticated;
}
