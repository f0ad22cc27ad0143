import { audit } from "../audit/store.js";
import type { CallContext } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import type { Sql } from "../platform/database.js";
import { tokenIntrospections } from "../platform/metrics.js";
import { permissionDenied } from "../policy/refusals.js";
import type { Actor, InspectedToken, TokenVerifier } from "../tokens/access-token.js";
import { serviceAccountStore, type ServiceAccountRow } from "./store.js";
import type { SessionCheck } from "./token-exchange.js";

/**
 * RFC 7662 for services in any language: is this token good right now? Its
 * signature and expiry, for whichever audience it was issued; a user's
 * session as the revocation feed has it (the same in-memory state every call
 * is checked against, so an answer is never staler than the feed), with KYC
 * level and permissions as they stand; a service's account, and every
 * service that acted in an exchange, still enabled. Expiry is by our own
 * clock, without the tolerance given to other servers' clocks.
 *
 * RFC 7662 §4: a caller learns only of tokens meant for it (its own name, one
 * of its audiences, or Portcullis's own audience, whose user tokens resource
 * servers are handed); any other is inactive to it. A disabled caller is
 * refused. Accounts are read from Postgres on every call, in one query by
 * name, so a disable counts at once on every instance.
 *
 * Hot and read-only: counted, not audited (but for a disabled caller).
 */
export class Introspection {
  constructor(
    private readonly sql: Sql,
    private readonly tokens: TokenVerifier,
    private readonly revocations: SessionCheck,
    /** JWT_AUDIENCE. */
    private readonly ownAudience: string,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The token as it stands now, or undefined when it is not good or not the
   * caller's to ask about (RFC 7662 says only `active: false`).
   */
  async introspect(token: string, call: CallContext): Promise<InspectedToken | undefined> {
    const caller = call.principal!.subject;
    const inspected = await this.verified(token);
    const named = inspected ? accountsNamedIn(inspected) : [];
    const accounts = await serviceAccountStore.findAll(this.sql, [caller, ...named]);
    const callerAccount = accounts.find((account) => account.name === caller);
    if (!callerAccount || callerAccount.disable_time) {
      await audit(this.sql, call, { event: "token.introspect", outcome: "denied", detail: { client_id: caller, reason: "service_disabled" } });
      throw permissionDenied("SERVICE_DISABLED", "this service account is disabled");
    }
    const found = inspected && this.current(inspected, callerAccount, accounts, named);
    tokenIntrospections.labels(found ? "true" : "false").inc();
    return found;
  }

  private async verified(token: string): Promise<InspectedToken | undefined> {
    try {
      return await this.tokens.inspect(token, undefined);
    } catch (error) {
      if (isUnauthenticated(error)) return undefined;
      throw error;
    }
  }

  /** `named`: the accounts the token stands on, each of which must be among `accounts` and enabled. */
  private current(inspected: InspectedToken, caller: ServiceAccountRow, accounts: ServiceAccountRow[], named: string[]): InspectedToken | undefined {
    const { principal } = inspected;
    if (principal.expiresAt * 1000 <= this.now()) return undefined;
    if (![caller.name, ...caller.audiences, this.ownAudience].includes(inspected.audience)) return undefined;
    const enabled = (name: string) => accounts.some((account) => account.name === name && !account.disable_time);
    if (!named.every(enabled)) return undefined;
    if (principal.kind === "service") return inspected;
    try {
      return { ...inspected, principal: this.revocations.check(principal) };
    } catch (error) {
      // A feed that cannot confirm revocations answers UNAVAILABLE: the caller retries rather than sign a user out.
      if (isUnauthenticated(error)) return undefined;
      throw error;
    }
  }
}

/** The service accounts a token stands on: a service token's own, and each service that acted in an exchange. */
function accountsNamedIn({ principal, actor }: InspectedToken): string[] {
  const names = principal.kind === "service" ? [principal.subject] : [];
  for (let acting: Actor | undefined = actor; acting; acting = acting.act) names.push(acting.sub);
  return names;
}

function isUnauthenticated(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unauthenticated;
}
