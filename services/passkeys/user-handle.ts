/**
 * The WebAuthn user handle of an account: its uuid's 16 bytes. Never an email
 * or a phone number: authenticators keep it, and show it to no one, but it is
 * not ours to spread.
 */
export function userHandleOf(userId: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(userId.replace(/-/g, ""), "hex"));
}

/** Whether `encoded` (base64url, as an assertion carries it) is the handle of `userId`. */
export function isUserHandleOf(encoded: string, userId: string): boolean {
  return Buffer.from(encoded, "base64url").equals(Buffer.from(userHandleOf(userId)));
}
