import { createHash, createHmac, randomBytes } from "node:crypto";

/**
 * Refresh tokens are 256 random bits, stored only as a SHA-256 hash. A
 * successor is derived from the token it replaces (HMAC under a server key),
 * so a retry inside the reuse window can be given the very same successor
 * without the plaintext ever being stored.
 */
export function newRefreshToken(): string {
  return randomBytes(32).toString("base64url");
}

export function successorOf(token: string, key: Buffer): string {
  return createHmac("sha256", key).update(token).digest("base64url");
}

export function hashRefreshToken(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

/** Cheap shape check before any lookup: 43 base64url characters. */
export function looksLikeRefreshToken(token: string): boolean {
  return /^[A-Za-z0-9_-]{43}$/.test(token);
}
