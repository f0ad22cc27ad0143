import { exportJWK, generateKeyPair, calculateJwkThumbprint, importJWK, type CryptoKey, type JWK } from "jose";
import type { MikroORM } from "@mikro-orm/postgresql";
import type { SigningAlgorithm } from "../platform/config.js";
import type { Envelope } from "../platform/envelope.js";
import type { Logger } from "../platform/logger.js";
import { SigningKey } from "./signing-key.js";
import { currentSigningKey, isExpired, nextKeyActivation, type SchedulePolicy } from "./key-schedule.js";

/** Any instance may rotate; this lock makes one do it at a time. */
const rotationLockId = 0x706f7274; // "port"
const refreshIntervalMs = 60_000;
const unknownKidReloadCooldownMs = 10_000;

interface LoadedKey {
  kid: string;
  algorithm: SigningAlgorithm;
  publicJwk: JWK;
  activateTime: Date;
  retireTime: Date | null;
  verifyKey: CryptoKey;
  sealedPrivateJwk: string;
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

  constructor(
    private readonly orm: MikroORM,
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
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Creates the next key when due, forgets expired ones, and reloads the ring. */
  async rotate(): Promise<void> {
    const now = this.now();
    await this.orm.em.fork().transactional(async (em) => {
      await em.execute("select pg_advisory_xact_lock(?)", [rotationLockId]);
      const keys = await em.find(SigningKey, {}, { orderBy: { activateTime: "asc" } });
      for (const key of keys) {
        if (isExpired(key, now, this.policy)) em.remove(key);
      }
      const activation = nextKeyActivation(keys, now, this.policy);
      if (!activation) return;
      const newest = keys.at(-1);
      if (newest) newest.retireTime = activation;
      em.create(SigningKey, await this.generate(now, activation));
      this.logger.info({ activateTime: activation.toISOString(), algorithm: this.algorithm }, "signing key created");
    });
    await this.reload();
  }

  private async generate(now: Date, activateTime: Date): Promise<SigningKey> {
    const { publicKey, privateKey } = await generateKeyPair(this.algorithm, { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(publicJwk);
    const privateJwk = await exportJWK(privateKey);
    return {
      kid,
      algorithm: this.algorithm,
      publicJwk,
      sealedPrivateJwk: this.envelope.seal(JSON.stringify(privateJwk), `signing_key:${kid}`),
      createTime: now,
      activateTime,
      retireTime: null,
    };
  }

  private async reload(): Promise<void> {
    this.lastReload = Date.now();
    const rows = await this.orm.em.fork().find(SigningKey, {});
    const next = new Map<string, LoadedKey>();
    for (const row of rows) {
      const known = this.keys.get(row.kid);
      next.set(row.kid, {
        kid: row.kid,
        algorithm: row.algorithm as SigningAlgorithm,
        publicJwk: row.publicJwk,
        activateTime: row.activateTime,
        retireTime: row.retireTime ?? null,
        verifyKey: known?.verifyKey ?? ((await importJWK(row.publicJwk, row.algorithm)) as CryptoKey),
        sealedPrivateJwk: row.sealedPrivateJwk,
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

  /** Algorithms of the keys in the ring: the allowlist for verification. */
  algorithms(): SigningAlgorithm[] {
    return [...new Set([this.algorithm, ...[...this.keys.values()].map((k) => k.algorithm)])];
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
