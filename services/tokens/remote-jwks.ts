import { importJWK, type CryptoKey, type JWK } from "jose";
import { unavailable } from "../kernel/errors.js";
import type { Logger } from "../platform/logger.js";
import type { VerificationKeys } from "./access-token.js";

const allowedAlgorithms = new Set(["ES256", "RS256", "EdDSA"]);

export interface RemoteJwksOptions {
  /** How long a fetched key set is trusted before it is fetched again. */
  maxAgeMs?: number;
  /** An unknown kid triggers at most one fetch per cooldown, so forged kids cannot flood Portcullis. */
  cooldownMs?: number;
}

type KeySet = Map<string, { algorithm: string; key: CryptoKey }>;

/** Why a fetch failed, in words safe to log: no URL, no body. */
class FetchFailure extends Error {
  constructor(readonly failure: "timeout" | "unreachable" | "http_status" | "malformed_key_set", readonly detail?: string | number) {
    super(failure);
  }
}

/**
 * Portcullis's published keys, fetched over HTTP by services that verify
 * tokens themselves. Keys come only from this URL, never from a token.
 *
 * A key set that cannot be fetched is our side's outage, not the caller's bad
 * token: the keys already fetched keep being served, and a kid we do not hold
 * is answered UNAVAILABLE (retryable) rather than TOKEN_INVALID, which would
 * make clients throw away good tokens.
 */
export class RemoteJwks implements VerificationKeys {
  private keys: KeySet = new Map();
  private fetchedAt = 0;
  private lastFetchFailed = false;
  private inFlight?: Promise<void>;
  private readonly maxAgeMs: number;
  private readonly cooldownMs: number;
  /** The URL's query may carry a token: logs name only where it points. */
  private readonly loggedUrl: string;

  constructor(private readonly url: string, private readonly logger: Logger, options: RemoteJwksOptions = {}) {
    this.maxAgeMs = options.maxAgeMs ?? 5 * 60_000;
    this.cooldownMs = options.cooldownMs ?? 30_000;
    const { origin, pathname } = new URL(url);
    this.loggedUrl = origin + pathname;
  }

  async verificationKey(kid: string) {
    const age = Date.now() - this.fetchedAt;
    const known = this.keys.has(kid);
    // After a failed fetch the next try waits only the cooldown, so an outage ends for us soon after it ends.
    const stale = age > (this.lastFetchFailed ? this.cooldownMs : this.maxAgeMs);
    if (stale || (!known && age > this.cooldownMs)) {
      await this.refresh().catch((error) => {
        if (!known) throw error;
      });
    } else if (!known && this.lastFetchFailed) {
      throw keysUnavailable();
    }
    return this.keys.get(kid);
  }

  /** One fetch at a time; callers arriving meanwhile wait for it. Rejects UNAVAILABLE. */
  refresh(): Promise<void> {
    this.inFlight ??= this.fetchKeys().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private async fetchKeys(): Promise<void> {
    this.fetchedAt = Date.now();
    try {
      this.keys = await this.download();
      this.lastFetchFailed = false;
    } catch (error) {
      this.lastFetchFailed = true;
      const { failure, detail } = error instanceof FetchFailure ? error : new FetchFailure("malformed_key_set");
      this.logger.warn({ jwks: this.loggedUrl, failure, detail, keysHeld: this.keys.size }, "JWKS fetch failed");
      throw keysUnavailable();
    }
  }

  private async download(): Promise<KeySet> {
    const signal = AbortSignal.timeout(5000);
    const response = await fetch(this.url, { signal, redirect: "error" }).catch((error: Error) => {
      throw signal.aborted ? new FetchFailure("timeout") : new FetchFailure("unreachable", (error.cause as { code?: string } | undefined)?.code);
    });
    if (!response.ok) {
      await response.body?.cancel();
      throw new FetchFailure("http_status", response.status);
    }
    const { keys } = (await response.json().catch(() => {
      throw new FetchFailure(signal.aborted ? "timeout" : "malformed_key_set");
    })) as { keys?: (JWK & { kid?: string; alg?: string; use?: string })[] };
    const next: KeySet = new Map();
    for (const jwk of keys ?? []) {
      if (!jwk.kid || !jwk.alg || !allowedAlgorithms.has(jwk.alg) || (jwk.use && jwk.use !== "sig") || "d" in jwk) continue;
      next.set(jwk.kid, { algorithm: jwk.alg, key: (await importJWK(jwk, jwk.alg)) as CryptoKey });
    }
    return next;
  }
}

function keysUnavailable() {
  return unavailable("Portcullis's token keys cannot be fetched; try again later");
}
