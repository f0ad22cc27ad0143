import { decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from "jose";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { unauthenticated } from "../kernel/errors.js";
import type { Database, Sql } from "../platform/database.js";
import type { ClientSecrets } from "./client-secrets.js";
import { algorithmsFor } from "./public-keys.js";
import { serviceAccountStore as store, type ServiceAccountRow, type ServiceCredentialRow } from "./store.js";

/** How a service account proves itself: a JWT it signed (RFC 7523, private_key_jwt), or its client secret. */
export type ClientProof = { assertion: string } | { secret: string };

/** The proof's kind as OAuth names it (RFC 8414 token_endpoint_auth_methods_supported), and as the audit log does. */
export type ClientAuthMethod = "private_key_jwt" | "client_secret";

export interface AuthenticatedClient {
  account: ServiceAccountRow;
  method: ClientAuthMethod;
}

export interface AssertionSettings {
  /** What an assertion's `aud` may name: Portcullis's token endpoint, or its issuer. */
  audiences: string[];
  clockToleranceSeconds: number;
}

/** RFC 7523 asks for a short life: a captured assertion is worthless after this, and its jti is kept no longer. */
const maxAssertionLifetimeSeconds = 300;
const maxJtiLength = 256;
/** Claims jose names when one fails its check; any other is reported as "claims", so audit reasons stay a fixed set. */
const checkedClaims = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]);

/** The one answer to every failed proof, so a caller learns nothing of which part failed; the audit log keeps that. */
export const invalidClient = () => unauthenticated("INVALID_CLIENT", "client authentication failed");

type Proven = { credential: ServiceCredentialRow; assertion?: { jti: string; expireTime: Date } };

/**
 * Proves service accounts. Client secrets are compared by keyed hash in
 * constant time; client assertions are verified with the account's active
 * public keys, with algorithms taken from each key, and each jti is spent
 * once. Neither a secret nor an assertion is ever logged or audited.
 */
export class ClientAuthentication {
  constructor(
    private readonly db: Database,
    private readonly secrets: ClientSecrets,
    private readonly settings: AssertionSettings,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Proves `clientId` and runs `use` in one transaction, which holds the
   * account's row from the start (a disable waits for it, or has committed
   * and is seen) and spends the proof (the assertion's jti, the credential's
   * last use), so what the proof was for commits with it or not at all.
   * Every failure answers INVALID_CLIENT, with a failure row of `event`
   * saying why.
   */
  async authenticate<T>(
    clientId: string,
    proof: ClientProof,
    origin: CallOrigin,
    event: string,
    use: (tx: Sql, client: AuthenticatedClient) => Promise<T>,
  ): Promise<T> {
    const method: ClientAuthMethod = "assertion" in proof ? "private_key_jwt" : "client_secret";
    const outcome = await this.db.transaction(async (tx) => {
      const refuse = async (reason: string) => {
        await audit(tx, origin, { event, outcome: "failure", detail: { client_id: clientId, method, reason } });
        return undefined;
      };
      const account = await store.lockShared(tx, clientId);
      if (!account || account.disable_time) return refuse(account ? "account_disabled" : "unknown_client");
      const proven = await this.prove(tx, account, proof);
      if (typeof proven === "string") return refuse(proven);
      const { assertion, credential } = proven;
      if (assertion && !(await store.recordAssertion(tx, clientId, assertion.jti, assertion.expireTime))) return refuse("assertion_replayed");
      // A revocation committed since the credential was read leaves nothing to mark.
      if (!(await store.markUsed(tx, credential.id))) return refuse("credential_revoked");
      return { value: await use(tx, { account, method }) };
    });
    if (!outcome) throw invalidClient();
    return outcome.value;
  }

  /** The credential that proves the account, or why none does. */
  private async prove(sql: Sql, account: ServiceAccountRow, proof: ClientProof): Promise<Proven | string> {
    if ("secret" in proof) {
      const credentials = await store.provingCredentials(sql, account.name, "client_secret");
      if (credentials.length === 0) return "no_active_credential";
      const credential = credentials.find((candidate) => this.secrets.matches(proof.secret, candidate.secret_hash!));
      return credential ? { credential } : "wrong_secret";
    }
    return this.proveAssertion(sql, account.name, proof.assertion);
  }

  private async proveAssertion(sql: Sql, name: string, assertion: string): Promise<Proven | string> {
    let kid: unknown;
    try {
      ({ kid } = decodeProtectedHeader(assertion));
    } catch {
      return "assertion_malformed";
    }
    const credentials = (await store.provingCredentials(sql, name, "public_key")).filter((key) => kid === undefined || key.key_id === kid);
    if (credentials.length === 0) return kid === undefined ? "no_active_credential" : "assertion_unknown_kid";
    const currentDate = new Date(this.now());
    for (const credential of credentials) {
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(assertion, credential.public_jwk!, {
          algorithms: algorithmsFor(credential.public_jwk!),
          issuer: name,
          subject: name,
          audience: this.settings.audiences,
          requiredClaims: ["exp", "jti"],
          clockTolerance: this.settings.clockToleranceSeconds,
          currentDate,
        }));
      } catch (error) {
        // Without a kid, the other active key (mid-rotation, or of another type) may be the one that signed.
        if (error instanceof errors.JWSSignatureVerificationFailed || error instanceof errors.JOSEAlgNotAllowed) continue;
        return failureOf(error);
      }
      const problem = this.lifetimeProblem(payload);
      if (problem) return problem;
      // Kept as long as jose would still accept the assertion.
      const expireTime = new Date((payload.exp! + this.settings.clockToleranceSeconds) * 1000);
      return { credential, assertion: { jti: payload.jti!, expireTime } };
    }
    return "assertion_signature";
  }

  /** jose checks exp and nbf; the rest of RFC 7523's limits are ours. */
  private lifetimeProblem(payload: JWTPayload): string | undefined {
    const now = this.now() / 1000;
    const tolerance = this.settings.clockToleranceSeconds;
    if (typeof payload.jti !== "string" || payload.jti.length === 0 || payload.jti.length > maxJtiLength) return "assertion_claim_jti";
    if (payload.exp! > now + maxAssertionLifetimeSeconds + tolerance) return "assertion_lifetime";
    if (payload.iat === undefined) return undefined;
    if (typeof payload.iat !== "number" || payload.iat > now + tolerance) return "assertion_claim_iat";
    return payload.exp! - payload.iat > maxAssertionLifetimeSeconds ? "assertion_lifetime" : undefined;
  }
}

function failureOf(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "assertion_expired";
  if (error instanceof errors.JWTClaimValidationFailed) return checkedClaims.has(error.claim) ? `assertion_claim_${error.claim}` : "assertion_claims";
  if (error instanceof errors.JOSEError || error instanceof TypeError) return "assertion_malformed";
  throw error;
}
