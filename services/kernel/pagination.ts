import { invalidArgument } from "./errors.js";
import { uuidPattern } from "./validation.js";

/**
 * Keyset pagination over (time, id): the token says where the last page
 * ended. Opaque to clients, and checked when it comes back.
 */
export function encodePageToken(time: Date, id: string): string {
  return Buffer.from(`${time.toISOString()}|${id}`).toString("base64url");
}

export function decodePageToken(token: string): [Date, string] {
  const [time, id] = Buffer.from(token, "base64url").toString().split("|");
  const date = new Date(time ?? "");
  // Only times a row of ours can have: JavaScript dates reach far past what Postgres accepts.
  const year = date.getUTCFullYear();
  if (Number.isNaN(year) || year < 2000 || year > 9999 || !id || !uuidPattern.test(id)) {
    throw invalidArgument([{ field: "page_token", description: "not a token from a previous response" }]);
  }
  return [date, id];
}

/** AIP-158: 0 means the default. The contract refuses a size out of range rather than cutting it silently. */
export function pageSizeOf(requested: number, fallback = 50): number {
  return requested || fallback;
}
