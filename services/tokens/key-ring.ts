import { exportJWK, generateKeyPair, calculateJwkThumbprint, importJWK, type CryptoKey, type JWK } from "jose";
import type { SigningAlgorithm } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import type { Envelope } from "../platform/envelope.js";
import type { Logger } from "../platform/logger.js";
import { reportKeyRing } from "../platform/metrics.js";
import { currentSigningKey, isExpired, nextKeyActivation, type SchedulePolicy } from "./key-schedule.js";
import { signingKeyStore as store, type StoredKey } from "./store.js";

const refreshIntervalMs = 60_000;
const unknownKidReloadCooldownMs = 10_000;

interface LoadedKey extends StoredKey {
  verifyKey: CryptoKey;
  /** Opened the first time the key signs. */
  signKey?: CryptoKey;
}

export interface PublicJwk extends JWK {
  kid: string;
  alg: string;
  use: "sig";
}

/**
 * The keys that sign access tokens, shared by every instance through Postgres.
 * Private parts are sealed under the key-encryption key and opened only for the
 * key that signs.
 */
export class KeyRing {
  private keys = new Map<string, LoadedKey>();
  private timer?: NodeJS.Timeout;
  private lastReload = 0;
  private stopReporting?: () => void;

  constructor(
    private readonly db: Database,
    private readonly envelope: Envelope,
    private readonly algorithm: SigningAlgorithm,
    private readonly policy: SchedulePolicy,
    private readonly logger: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async start(): Promise<void> {
    await this.rotate();
    this.timer = setInterval(() => {
      this.rotate().catch((error) => this.logger.error({ err: error }, "key ring refresh failed"));
    }, refreshIntervalMs);
    this.timer.unref();
    this.stopReporting = reportKeyRing({
      signingKeyAgeSeconds: () => {
        const now = this.now();
        const key = currentSigningKey([...this.keys.values()], now);
        return key && (now.getTime() - key.activateTime.getTime()) / 1000;
      },
      publishedKeys: () => this.jwks().length,
    });
  }

  stop(): void {
    clearInterval(this.timer);
    this.stopReporting?.();
  }

  /** Creates the next key when due, forgets expired ones, and reloads the ring. */
  async rotate(): Promise<void> {
    const now = this.now();
    await this.db.transaction(async (tx) => {
      await store.lockRotation(tx);
      const keys = await store.all(tx);
      const expired = keys.filter((key) => isExpired(key, now, this.policy)).map((key) => key.kid);
      if (expired.length > 0) await store.remove(tx, expired);
      const activation = nextKeyActivation(keys, now, this.policy);
      if (!activation) return;
      const newest = keys.at(-1);
      if (newest) await store.retire(tx, newest.kid, activation);
      const key = await this.generate(activation);
      await store.add(tx, key, now);
      this.logger.info({ activateTime: activation.toISOString(), algorithm: this.algorithm }, "signing key created");
    });
    await this.reload();
  }

  private async generate(activateTime: Date): Promise<StoredKey> {
    const { publicKey, privateKey } = await generateKeyPair(this.algorithm, { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(publicJwk);
    const privateJwk = await exportJWK(privateKey);
    return {
      kid,
      algorithm: this.algorithm,
      publicJwk,
      sealedPrivateJwk: this.envelope.seal(JSON.stringify(privateJwk), `signing_key:${kid}`),
      activateTime,
      retireTime: null,
    };
  }

  private async reload(): Promise<void> {
    this.lastReload = Date.now();
    const rows = await store.all(this.db);
    const next = new Map<string, LoadedKey>();
    for (const row of rows) {
      const known = this.keys.get(row.kid);
      next.set(row.kid, {
        ...row,
        verifyKey: known?.verifyKey ?? ((await importJWK(row.publicJwk, row.algorithm)) as CryptoKey),
        signKey: known?.signKey,
      });
    }
    this.keys = next;
  }

  /** The key to sign with now. */
  async signingKey(): Promise<{ kid: string; algorithm: SigningAlgorithm; key: CryptoKey }> {
    const key = currentSigningKey([...this.keys.values()], this.now());
    if (!key) throw new Error("the key ring has no active signing key");
    if (!key.signKey) {
      const jwk = JSON.parse(this.envelope.open(key.sealedPrivateJwk, `signing_key:${key.kid}`)) as JWK;
      key.signKey = (await importJWK(jwk, key.algorithm)) as CryptoKey;
    }
    return { kid: key.kid, algorithm: key.algorithm, key: key.signKey };
  }

  /**
   * The public key for a kid. A kid we do not know may be a key another
   * instance just created: reload, but at most once per cooldown so forged
   * kids cannot turn into database load.
   */
  async verificationKey(kid: string): Promise<{ algorithm: SigningAlgorithm; key: CryptoKey } | undefined> {
    let key = this.keys.get(kid);
    if (!key && Date.now() - this.lastReload > unknownKidReloadCooldownMs) {
      await this.reload();
      key = this.keys.get(kid);
    }
    return key && { algorithm: key.algorithm, key: key.verifyKey };
  }

  /** Every key that signs now, will sign, or signed tokens that have not expired. */
  jwks(): PublicJwk[] {
    const now = this.now();
    return [...this.keys.values()]
      .filter((key) => !isExpired(key, now, this.policy))
      .sort((a, b) => b.activateTime.getTime() - a.activateTime.getTime())
      .map((key) => ({ ...key.publicJwk, kid: key.kid, alg: key.algorithm, use: "sig" as const }));
  }
}
