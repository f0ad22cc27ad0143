import { createHmac, randomBytes } from "node:crypto";

/** The first 16 bytes, spelled as Postgres spells a uuid. */
export function asUuid(bytes: Buffer): string {
  const hex = bytes.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A row id that names a secret handed to a client without storing it: the secret's HMAC under `key`, as a uuid. */
function keyedUuid(key: Buffer, secret: string): string {
  return asUuid(createHmac("sha256", key).update(secret).digest());
}

/** newSecretId's ids: 256 bits in base64url. */
const secretIdPattern = /^[A-Za-z0-9_-]{43}$/;

/**
 * An id only its client holds (256 random bits: unguessable), and the row id
 * that stores it, so a copy of the table names nothing a client could use.
 */
export function newSecretId(key: Buffer): { id: string; rowId: string } {
  const id = randomBytes(32).toString("base64url");
  return { id, rowId: keyedUuid(key, id) };
}

/** The row id of an id newSecretId gave under `key`; undefined for a string of any other shape, which names no row. */
export function rowIdOf(key: Buffer, id: string): string | undefined {
  return secretIdPattern.test(id) ? keyedUuid(key, id) : undefined;
}
