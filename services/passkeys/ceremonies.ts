import { randomBytes } from "node:crypto";
import { failedPrecondition } from "../kernel/errors.js";
import { keyedUuid } from "../kernel/uuid.js";
import type { Config } from "../platform/config.js";
import type { Sql } from "../platform/database.js";
import { ceremonyStore, type CeremonyKind } from "./store.js";

/** 256 random bits in base64url. */
const ceremonyIdPattern = /^[A-Za-z0-9_-]{43}$/;

/** Every ceremony starts here: with passkeys off, no options go out that the browser would only refuse. */
export function requirePasskeys(settings: Config["webauthn"]): void {
  if (settings.unavailable) throw failedPrecondition("PASSKEYS_UNAVAILABLE", "passkeys are not set up on this server");
}

/**
 * The challenges of WebAuthn ceremonies, one Start to one Finish. The client
 * holds 256 random bits; only an HMAC of them is stored (as the row's uuid),
 * so a copy of the table finishes nothing.
 */
export class Ceremonies {
  constructor(
    private readonly key: Buffer,
    private readonly ttlSeconds: number,
  ) {}

  /** The id to hand the client. */
  async open(sql: Sql, kind: CeremonyKind, userId: string | null, challenge: string): Promise<string> {
    const ceremonyId = randomBytes(32).toString("base64url");
    await ceremonyStore.open(sql, { id: this.rowId(ceremonyId), kind, userId, challenge, expireTime: new Date(Date.now() + this.ttlSeconds * 1000) });
    return ceremonyId;
  }

  /**
   * The challenge of a ceremony this server opened, of this kind and user,
   * unexpired and not finished before; it cannot be finished again.
   * Undefined for any other id, whatever its shape.
   */
  async consume(sql: Sql, ceremonyId: string, kind: CeremonyKind, userId: string | null): Promise<{ challenge: string; rowId: string } | undefined> {
    if (!ceremonyIdPattern.test(ceremonyId)) return undefined;
    const rowId = this.rowId(ceremonyId);
    const challenge = await ceremonyStore.consume(sql, rowId, kind, userId);
    return challenge === undefined ? undefined : { challenge, rowId };
  }

  /** How the table and the audit log name a ceremony: its HMAC, as a uuid. */
  private rowId(ceremonyId: string): string {
    return keyedUuid(this.key, ceremonyId);
  }
}
