import { createHmac, randomInt } from "node:crypto";

/**
 * Recovery codes: 10 per user, each 10 base32 characters (50 random bits)
 * shown as "xxxxx-xxxxx". Only keyed hashes are stored, scoped to their user,
 * so a copy of the database gives no code, and a code means nothing for
 * another account.
 */
const recoveryCodeCount = 10;

const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
const groupLength = 5;

function newRecoveryCode(): string {
  const chars = Array.from({ length: 2 * groupLength }, () => alphabet[randomInt(alphabet.length)]).join("");
  return `${chars.slice(0, groupLength)}-${chars.slice(groupLength)}`;
}

export function newRecoveryCodes(): string[] {
  return Array.from({ length: recoveryCodeCount }, newRecoveryCode);
}

export class RecoveryCodeHashes {
  constructor(private readonly key: Buffer) {}

  /** Case, spaces and dashes do not matter: people copy codes by hand. */
  of(userId: string, code: string): Buffer {
    const normalised = code.toLowerCase().replace(/[\s-]/g, "");
    return createHmac("sha256", this.key).update(`recovery:${userId}:${normalised}`).digest();
  }
}
