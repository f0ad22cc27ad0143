import { createHmac, randomBytes, randomInt } from "node:crypto";

/**
 * The secrets a person proves something with once: a short code to type and,
 * in mails, a long token for a link. Only keyed hashes are stored, so a copy
 * of the database proves nothing; a code's hash is scoped to what it was sent
 * for (an address, a user), so the same digits mean nothing elsewhere.
 */
export const codeLength = 6;

export function newCode(): string {
  return randomInt(0, 10 ** codeLength).toString().padStart(codeLength, "0");
}

/** 256 random bits: unguessable, so a link needs no attempt counting of its own. */
export function newLinkToken(): string {
  return randomBytes(32).toString("base64url");
}

export class SecretMacs {
  constructor(private readonly key: Buffer) {}

  code(scope: string, code: string): Buffer {
    return createHmac("sha256", this.key).update(`code:${scope}:${code}`).digest();
  }

  link(token: string): Buffer {
    return createHmac("sha256", this.key).update(`link:${token}`).digest();
  }
}
