import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { asUuid } from "../kernel/uuid.js";

const userBytes = 16;
const secretBytes = 32;
const tagBytes = 16;
const tokenLength = Math.ceil(((userBytes + secretBytes + tagBytes) * 4) / 3);

/**
 * Refresh tokens: the user's id, 256 secret bits, and a MAC over both, stored
 * only as a SHA-256 hash. The id lets the per-user refresh limit apply before
 * any database work, and the MAC means a forged token cannot spend someone
 * else's limit. A successor's secret is derived from the token it replaces
 * (HMAC under a server key), so a retry inside the reuse window can be given
 * the very same successor without the plaintext ever being stored.
 */
export class RefreshTokens {
  private readonly tagKey: Buffer;
  private readonly successorKey: Buffer;

  constructor(key: Buffer) {
    this.tagKey = createHmac("sha256", key).update("refresh-token-tag").digest();
    this.successorKey = createHmac("sha256", key).update("refresh-token-successor").digest();
  }

  mint(userId: string): string {
    return this.seal(userId, randomBytes(secretBytes));
  }

  successorOf(token: string, userId: string): string {
    return this.seal(userId, createHmac("sha256", this.successorKey).update(token).digest());
  }

  /** The user a genuine token belongs to, or undefined for anything we did not mint. */
  userOf(token: string): string | undefined {
    if (token.length !== tokenLength || !/^[A-Za-z0-9_-]+$/.test(token)) return undefined;
    const raw = Buffer.from(token, "base64url");
    const body = raw.subarray(0, userBytes + secretBytes);
    if (!timingSafeEqual(raw.subarray(userBytes + secretBytes), this.tag(body))) return undefined;
    return asUuid(body.subarray(0, userBytes));
  }

  private seal(userId: string, secret: Buffer): string {
    const body = Buffer.concat([Buffer.from(userId.replaceAll("-", ""), "hex"), secret]);
    return Buffer.concat([body, this.tag(body)]).toString("base64url");
  }

  private tag(body: Buffer): Buffer {
    return createHmac("sha256", this.tagKey).update(body).digest().subarray(0, tagBytes);
  }
}

export function hashRefreshToken(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}
