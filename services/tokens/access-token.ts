import { randomUUID } from "node:crypto";
import { SignJWT, decodeProtectedHeader, errors, jwtVerify, type CryptoKey, type JWTPayload } from "jose";
import type { Principal } from "../kernel/call.js";
import { unauthenticated } from "../kernel/errors.js";
import type { KeyRing } from "./key-ring.js";

/** The acting service is not the subject's: it is named where the token is bound (BoundTo.actor). */
export type TokenSubject = Omit<Principal, "tokenId" | "issuedAt" | "expiresAt" | "actor"> & {
  /** A user's tokens say whether their email address is confirmed (claim email_verified); service tokens say nothing. */
  emailVerified?: boolean;
};

interface Claims extends JWTPayload {
  sid?: string;
  sid_exp?: number;
  did?: string;
  kyc_lvl?: number;
  kyc_st?: string;
  perm?: string[];
  amr?: string[];
  svc?: boolean;
  /** RFC 8693: the service acting for the subject, in a token exchanged for another audience. */
  act?: unknown;
  email_verified?: boolean;
  /** Authentication assurance level: 2 once a second factor was proved in the session. */
  aal?: number;
  /** When a second factor was last proved in the session, in seconds since the epoch. */
  mfa_time?: number;
  /** The account has a second factor: the chain asks a step-up only of such accounts. */
  mfa?: boolean;
}

export interface VerifierSettings {
  issuer: string;
  /** The audiences this verifier serves: a token must name one of them in `aud`. */
  audience: string | readonly string[];
  clockToleranceSeconds: number;
  verifiedCacheSize: number;
  /** The longest exp − iat the issuer gives; a longer token was not issued as configured. */
  maxLifetimeSeconds: number;
}

export interface AccessTokenSettings extends Omit<VerifierSettings, "maxLifetimeSeconds" | "audience"> {
  /** Portcullis's own audience: what its tokens carry unless bound to another. */
  audience: string;
  ttlSeconds: number;
}

/**
 * RFC 8693 §4.1's `act`: the service acting for the subject, and within it
 * the one that acted before it when the token was exchanged more than once.
 */
export interface Actor {
  sub: string;
  act?: Actor;
}

/** How a token is bound beyond Portcullis's defaults. */
export interface BoundTo {
  /** The service the token is for, instead of Portcullis's own audience. */
  audience?: string;
  /** A life shorter than ACCESS_TOKEN_TTL_SECONDS. */
  ttlSeconds?: number;
  /** The latest expiry, in seconds since the epoch: an exchanged token never outlives the one it came from. */
  notAfter?: number;
  /** The service acting for the subject, with those that acted before it (claim `act`). */
  actor?: Actor;
}

/** A verified token as introspection and token exchange read it: whom it is for, besides its bearer. */
export interface InspectedToken {
  principal: Principal;
  audience: string;
  issuer: string;
  emailVerified?: boolean;
  /** The whole chain of acting services; the principal names only the immediate one. */
  actor?: Actor;
}

/** Where verification keys come from: our key ring, or (in other services) our JWKS over HTTP. */
export interface VerificationKeys {
  verificationKey(kid: string): Promise<{ algorithm: string; key: CryptoKey } | undefined>;
}

/**
 * Verifies access tokens (RFC 9068 profile: typ at+jwt) against keys we
 * hold, never keys named by the token. Verification is jose's; a bounded
 * cache of tokens already verified, each kept until its exp, takes the
 * signature check off the hot path.
 */
export class TokenVerifier {
  private readonly verified = new Map<string, Principal>();

  constructor(
    private readonly keys: VerificationKeys,
    protected readonly settings: VerifierSettings,
    protected readonly now: () => number = Date.now,
  ) {}

  /** The token's principal, or an UNAUTHENTICATED error saying whether to refresh. */
  async verify(token: string): Promise<Principal> {
    const cached = this.verified.get(token);
    if (cached) {
      if (cached.expiresAt * 1000 + this.settings.clockToleranceSeconds * 1000 > this.now()) return cached;
      this.verified.delete(token);
      throw unauthenticated("TOKEN_EXPIRED", "the access token has expired; refresh it");
    }
    // Other spellings of one signature would each pass jose and take a cache entry of their own
    // (checked on a miss only: the cache holds nothing that failed this).
    if (!hasCanonicalSignature(token)) throw unauthenticated("TOKEN_INVALID", "the access token is not valid");
    const principal = principalOf(await this.verifiedClaims(token, this.settings.audience));
    this.remember(token, principal);
    return principal;
  }

  /**
   * Verifies like `verify`, without its cache, for `audience` instead of the
   * configured one (undefined: any audience we issue for, as introspection
   * needs), and says what a principal does not.
   */
  async inspect(token: string, audience: string | readonly string[] | undefined): Promise<InspectedToken> {
    if (!hasCanonicalSignature(token)) throw unauthenticated("TOKEN_INVALID", "the access token is not valid");
    const payload = await this.verifiedClaims(token, audience);
    return {
      principal: principalOf(payload),
      // We issue one audience per token; jose also accepts a list.
      audience: typeof payload.aud === "string" ? payload.aud : (payload.aud?.[0] ?? ""),
      issuer: payload.iss!,
      emailVerified: payload.email_verified,
      actor: actorOf(payload.act),
    };
  }

  private async verifiedClaims(token: string, audience: string | readonly string[] | undefined): Promise<Claims> {
    let kid: unknown;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw unauthenticated("TOKEN_INVALID", "the access token is not valid");
    }
    // Outside the try below: a key source that fails (a JWKS outage) is our fault, not the token's.
    const found = typeof kid === "string" ? await this.keys.verificationKey(kid) : undefined;
    if (!found) throw unauthenticated("TOKEN_INVALID", "the access token is not valid");
    let payload: Claims;
    try {
      ({ payload } = await jwtVerify<Claims>(token, found.key, {
        algorithms: [found.algorithm],
        issuer: this.settings.issuer,
        audience: typeof audience === "string" || audience === undefined ? audience : [...audience],
        typ: "at+jwt",
        clockTolerance: this.settings.clockToleranceSeconds,
        requiredClaims: ["sub", "exp", "iat", "jti"],
        currentDate: new Date(this.now()),
      }));
    } catch (error) {
      if (error instanceof errors.JWTExpired) {
        throw unauthenticated("TOKEN_EXPIRED", "the access token has expired; refresh it");
      }
      if (error instanceof errors.JOSEError || error instanceof TypeError || error instanceof SyntaxError) {
        throw unauthenticated("TOKEN_INVALID", "the access token is not valid");
      }
      throw error;
    }
    const service = payload.svc === true;
    if (!service && typeof payload.sid !== "string") {
      throw unauthenticated("TOKEN_INVALID", "the access token is not valid");
    }
    const tolerance = this.settings.clockToleranceSeconds;
    const issuedInFuture = payload.iat! > this.now() / 1000 + tolerance;
    const outlivesIssuer = payload.exp! - payload.iat! > this.settings.maxLifetimeSeconds + tolerance;
    if (issuedInFuture || outlivesIssuer) throw unauthenticated("TOKEN_INVALID", "the access token is not valid");
    return payload;
  }

  /** First in, first out: a full cache drops its oldest entry, which expires soonest. */
  private remember(token: string, principal: Principal): void {
    if (this.settings.verifiedCacheSize === 0) return;
    if (this.verified.size >= this.settings.verifiedCacheSize) {
      this.verified.delete(this.verified.keys().next().value!);
    }
    this.verified.set(token, principal);
  }
}

/** What the claims say about the bearer, once verified. */
function principalOf(payload: Claims): Principal {
  return {
    kind: payload.svc === true ? "service" : "user",
    subject: payload.sub!,
    sessionId: payload.sid ?? "",
    deviceId: payload.did ?? "",
    sessionExpiresAt: typeof payload.sid_exp === "number" ? payload.sid_exp : 0,
    kycLevel: typeof payload.kyc_lvl === "number" ? payload.kyc_lvl : 0,
    kycStatus: payload.kyc_st ?? "",
    permissions: Array.isArray(payload.perm) ? payload.perm : [],
    amr: Array.isArray(payload.amr) ? payload.amr : [],
    actor: actorOf(payload.act)?.sub,
    aal: typeof payload.aal === "number" ? payload.aal : 1,
    mfaTime: typeof payload.mfa_time === "number" ? payload.mfa_time : 0,
    mfaEnrolled: payload.mfa === true,
    tokenId: payload.jti!,
    issuedAt: payload.iat!,
    expiresAt: payload.exp!,
  };
}

/** An `act` claim as an Actor, keeping only `sub` and the nested `act` (RFC 8693 §4.1: other members say nothing of who acted). */
export function actorOf(claim: unknown): Actor | undefined {
  if (typeof claim !== "object" || claim === null) return undefined;
  const { sub, act } = claim as { sub?: unknown; act?: unknown };
  if (typeof sub !== "string") return undefined;
  const before = actorOf(act);
  return before ? { sub, act: before } : { sub };
}

/** The base64url of the signature is the one encoding of its bytes: no stray bits in the last character. */
function hasCanonicalSignature(token: string): boolean {
  const signature = token.slice(token.lastIndexOf(".") + 1);
  return Buffer.from(signature, "base64url").toString("base64url") === signature;
}

/**
 * Issues access tokens with the key ring, and verifies them like any verifier,
 * refusing any token that lives longer than the ones it issues.
 */
export class AccessTokens extends TokenVerifier {
  private readonly audience: string;
  private readonly ttlSeconds: number;

  constructor(
    private readonly keyRing: KeyRing,
    settings: AccessTokenSettings,
    now: () => number = Date.now,
  ) {
    super(keyRing, { ...settings, maxLifetimeSeconds: settings.ttlSeconds }, now);
    this.audience = settings.audience;
    this.ttlSeconds = settings.ttlSeconds;
  }

  /**
   * Signs a token for `subject`: for Portcullis's own audience and lifetime,
   * unless `bound` names another audience (a service token, an exchanged
   * one), a shorter life, a latest expiry or the acting service.
   */
  async issue(subject: TokenSubject, bound: BoundTo = {}): Promise<{ token: string; expiresAt: Date; tokenId: string }> {
    const { kid, algorithm, key } = await this.keyRing.signingKey();
    const issuedAt = Math.floor(this.now() / 1000);
    const expiresAt = Math.min(issuedAt + (bound.ttlSeconds ?? this.ttlSeconds), bound.notAfter ?? Number.POSITIVE_INFINITY);
    const claims: Claims = {
      sid: subject.sessionId || undefined,
      sid_exp: subject.sessionExpiresAt || undefined,
      did: subject.deviceId || undefined,
      kyc_lvl: subject.kycLevel,
      kyc_st: subject.kycStatus,
      perm: [...subject.permissions],
      amr: [...subject.amr],
      svc: subject.kind === "service" || undefined,
      email_verified: subject.emailVerified,
      act: bound.actor,
      // Service tokens prove no person's factors: they carry no assurance level.
      aal: subject.kind === "user" ? (subject.aal ?? 1) : undefined,
      mfa_time: subject.mfaTime || undefined,
      mfa: subject.mfaEnrolled || undefined,
    };
    const tokenId = randomUUID();
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: algorithm, kid, typ: "at+jwt" })
      .setIssuer(this.settings.issuer)
      .setAudience(bound.audience ?? this.audience)
      .setSubject(subject.subject)
      .setJti(tokenId)
      .setIssuedAt(issuedAt)
      .setNotBefore(issuedAt)
      .setExpirationTime(expiresAt)
      .sign(key);
    return { token, expiresAt: new Date(expiresAt * 1000), tokenId };
  }
}
