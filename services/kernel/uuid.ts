import { createHmac } from "node:crypto";

/** The first 16 bytes, spelled as Postgres spells a uuid. */
export function asUuid(bytes: Buffer): string {
  const hex = bytes.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A row id that names a secret handed to a client without storing it: the secret's HMAC under `key`, as a uuid. */
export function keyedUuid(key: Buffer, secret: string): string {
  return asUuid(createHmac("sha256", key).update(secret).digest());
}
