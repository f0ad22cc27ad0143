import { failedPrecondition } from "../kernel/errors.js";
import { newSecretId, rowIdOf } from "../kernel/uuid.js";
import type { Config } from "../platform/config.js";
import type { Sql } from "../platform/database.js";
import { ceremonyStore, type CeremonyKind } from "./store.js";

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
    const { id, rowId } = newSecretId(this.key);
    await ceremonyStore.open(sql, { id: rowId, kind, userId, challenge, expireTime: new Date(Date.now() + this.ttlSeconds * 1000) });
    return id;
  }

  /**
   * The challenge of a ceremony this server opened, of this kind and user,
   * unexpired and not finished before; it cannot be finished again.
   * Undefined for any other id, whatever its shape.
   */
  async consume(sql: Sql, ceremonyId: string, kind: CeremonyKind, userId: string | null): Promise<{ challenge: string; rowId: string } | undefined> {
    const rowId = rowIdOf(this.key, ceremonyId);
    if (!rowId) return undefined;
    const challenge = await ceremonyStore.consume(sql, rowId, kind, userId);
    return challenge === undefined ? undefined : { challenge, rowId };
  }
}
