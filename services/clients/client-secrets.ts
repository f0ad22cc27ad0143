import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** Marks a string as a Portcullis client secret, so secret scanners and people can tell what leaked. */
const prefix = "pcs_";

/**
 * Client secrets: 256 random bits, kept only as a keyed hash (HMAC-SHA256).
 * With that much entropy a fast hash cannot be brute-forced, so no password
 * hash is needed; the key keeps a stolen table from confirming a guess offline.
 */
export class ClientSecrets {
  constructor(private readonly key: Buffer) {}

  generate(): { secret: string; hash: Buffer } {
    const secret = prefix + randomBytes(32).toString("base64url");
    return { secret, hash: this.hash(secret) };
  }

  /** Whether `presented` is the secret behind `stored`, in time that does not depend on where they differ. */
  matches(presented: string, stored: Buffer): boolean {
    const hash = this.hash(presented);
    return hash.length === stored.length && timingSafeEqual(hash, stored);
  }

  private hash(secret: string): Buffer {
    return createHmac("sha256", this.key).update(secret).digest();
  }
}
