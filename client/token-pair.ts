import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { TokenPair } from "../gen/portcullis/v1/common_pb.js";
import { PortcullisError } from "./errors.js";
import type { StoredSession } from "./storage.js";

export type Pair = Pick<StoredSession, "accessToken" | "accessTokenExpireTime" | "refreshToken" | "refreshTokenExpireTime">;

/** The stored form of a TokenPair; an answer that should carry one and does not is refused rather than stored half. */
export function pairOf(tokens: TokenPair | undefined): Pair {
  if (!tokens?.accessToken || !tokens.refreshToken || !tokens.accessTokenExpireTime || !tokens.refreshTokenExpireTime) {
    throw PortcullisError.from(new ConnectError("the answer carried no whole token pair", Code.Internal));
  }
  return {
    accessToken: tokens.accessToken,
    accessTokenExpireTime: timestampMs(tokens.accessTokenExpireTime),
    refreshToken: tokens.refreshToken,
    refreshTokenExpireTime: timestampMs(tokens.refreshTokenExpireTime),
  };
}

/**
 * How far the server's clock runs ahead of this device's (negative: behind), so
 * that expiry times it sends can be kept on the device's clock: an access token
 * just received was issued about `now`, so it expires its own lifetime later.
 * 0 when the token cannot be read.
 */
export function clockSkewMs(accessToken: string, accessTokenExpireTime: number, now: number): number {
  const lifetime = lifetimeMs(accessToken);
  return lifetime === undefined ? 0 : accessTokenExpireTime - (now + lifetime);
}

/** exp − iat of an access token, read (not verified: only for timing) from its payload; undefined if it has none. */
export function lifetimeMs(accessToken: string): number | undefined {
  try {
    const payload = accessToken.split(".")[1] ?? "";
    const { iat, exp } = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as { iat?: unknown; exp?: unknown };
    return typeof iat === "number" && typeof exp === "number" && exp > iat ? (exp - iat) * 1000 : undefined;
  } catch {
    return undefined;
  }
}
