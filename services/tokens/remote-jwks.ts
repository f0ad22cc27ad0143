import { importJWK, type CryptoKey, type JWK } from "jose";
import type { VerificationKeys } from "./access-token.js";

const allowedAlgorithms = new Set(["ES256", "RS256", "EdDSA"]);

export interface RemoteJwksOptions {
  /** How long a fetched key set is trusted before it is fetched again. */
  maxAgeMs?: number;
  /** An unknown kid triggers at most one fetch per cooldown, so forged kids cannot flood Portcullis. */
  cooldownMs?: number;
}

/**
 * Portcullis's published keys, fetched over HTTP by services that verify
 * tokens themselves. Keys come only from this URL, never from a token.
 */
export class RemoteJwks implements VerificationKeys {
  private keys = new Map<string, { algorithm: string; key: CryptoKey }>();
  private fetchedAt = 0;
  private inFlight?: Promise<void>;
  private readonly maxAgeMs: number;
  private readonly cooldownMs: number;

  constructor(private readonly url: string, options: RemoteJwksOptions = {}) {
    this.maxAgeMs = options.maxAgeMs ?? 5 * 60_000;
    this.cooldownMs = options.cooldownMs ?? 30_000;
  }

  async verificationKey(kid: string) {
    const age = Date.now() - this.fetchedAt;
    if (age > this.maxAgeMs || (!this.keys.has(kid) && age > this.cooldownMs)) await this.refresh();
    return this.keys.get(kid);
  }

  /** One fetch at a time; callers arriving meanwhile wait for it. */
  refresh(): Promise<void> {
    this.inFlight ??= this.fetchKeys().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private async fetchKeys(): Promise<void> {
    this.fetchedAt = Date.now();
    const response = await fetch(this.url, { signal: AbortSignal.timeout(5000), redirect: "error" });
    if (!response.ok) throw new Error(`JWKS ${this.url} answered HTTP ${response.status}`);
    const { keys } = (await response.json()) as { keys?: (JWK & { kid?: string; alg?: string; use?: string })[] };
    const next = new Map<string, { algorithm: string; key: CryptoKey }>();
    for (const jwk of keys ?? []) {
      if (!jwk.kid || !jwk.alg || !allowedAlgorithms.has(jwk.alg) || (jwk.use && jwk.use !== "sig") || "d" in jwk) continue;
      next.set(jwk.kid, { algorithm: jwk.alg, key: (await importJWK(jwk, jwk.alg)) as CryptoKey });
    }
    this.keys = next;
  }
}
