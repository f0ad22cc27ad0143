import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

/**
 * AES-256-GCM under a key derived from the key-encryption key, for secrets kept
 * at rest (signing keys, personal data). `context` is bound as associated data,
 * so a sealed value cannot be moved to another row or column unnoticed.
 * Format: base64(version | iv | tag | ciphertext).
 */
const version = 1;

/**
 * Every subkey the key-encryption key is split into, named once: a key is
 * only as stable as its label, and the app and the admin CLI must agree on it.
 */
export type KeyPurpose =
  | "signing-keys"
  | "totp-secrets"
  | "kyc-data"
  | "kyc-document-index"
  | "rate-limit-keys"
  | "refresh-tokens"
  | "client-secrets"
  | "recovery-codes"
  | "mfa-challenges"
  | "otp-codes"
  | "account-codes"
  | "password-reset"
  | "passkey-ceremonies";

export class Envelope {
  private readonly key: Buffer;

  constructor(keyEncryptionKey: Buffer, purpose: KeyPurpose) {
    this.key = deriveKey(keyEncryptionKey, purpose);
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return Buffer.concat([Buffer.from([version]), iv, cipher.getAuthTag(), body]).toString("base64");
  }

  open(sealed: string, context: string): string {
    const raw = Buffer.from(sealed, "base64");
    if (raw[0] !== version) throw new Error("sealed value has an unknown format");
    const decipher = createDecipheriv("aes-256-gcm", this.key, raw.subarray(1, 13));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(raw.subarray(13, 29));
    return Buffer.concat([decipher.update(raw.subarray(29)), decipher.final()]).toString("utf8");
  }
}

/**
 * A 32-byte subkey of the key-encryption key for one purpose (HKDF-SHA256):
 * each use (an envelope, rate-limit keys, blind indexes, refresh tokens)
 * holds its own key, never the key-encryption key itself.
 */
export function deriveKey(keyEncryptionKey: Buffer, purpose: KeyPurpose): Buffer {
  return Buffer.from(hkdfSync("sha256", keyEncryptionKey, Buffer.alloc(0), `portcullis:${purpose}`, 32));
}
