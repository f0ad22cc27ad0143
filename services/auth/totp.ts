import { Secret, TOTP } from "otpauth";

/**
 * RFC 6238 as authenticator apps speak it: SHA-1, 6 digits, 30-second steps.
 * A code is accepted from the step before to the step after the server's, for
 * clocks that drift and codes typed as they change.
 */
const period = 30;

/** 20 random bytes (160 bits, RFC 4226's recommendation), in base32. */
export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

const totpOf = (secret: string, label = "", issuer = "") =>
  new TOTP({ issuer, label, algorithm: "SHA1", digits: 6, period, secret: Secret.fromBase32(secret) });

/** The otpauth:// URI an app reads from the QR code: the issuer, the account it is for, and the parameters above. */
export function totpUri(secret: string, issuer: string, account: string): string {
  return totpOf(secret, account, issuer).toString();
}

/** The step `code` belongs to (within one step of now), or undefined when it is not a code of this secret now. */
export function matchingStep(secret: string, code: string, nowMs = Date.now()): number | undefined {
  const totp = totpOf(secret);
  const delta = totp.validate({ token: code, timestamp: nowMs, window: 1 });
  return delta === null ? undefined : totp.counter({ timestamp: nowMs }) + delta;
}
