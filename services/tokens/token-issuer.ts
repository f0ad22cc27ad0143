import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { SignInMethod, type TokenPairSchema } from "../../gen/portcullis/v1/common_pb.js";
import type { AccessTokens } from "./access-token.js";

/** The user facts an access token carries, as of the moment it is issued. */
export interface ClaimsSource {
  userId: string;
  kycLevel: number;
  kycStatus: string;
  permissions: readonly string[];
  /** Whether the account's email address is confirmed; false with no address. */
  emailVerified: boolean;
}

/** What a token pair tells of its session (the user comes from ClaimsSource). */
export interface TokenSessionClaims {
  id: string;
  deviceId: string;
  signInMethod: SignInMethod;
  expireTime: Date;
}

const amrOf: Record<SignInMethod, string[]> = {
  [SignInMethod.UNSPECIFIED]: [],
  [SignInMethod.OTP]: ["otp", "sms"],
  [SignInMethod.PASSWORD]: ["pwd"],
};

/** Puts an access token and its refresh token together into the pair clients receive. */
export async function issueTokenPair(
  tokens: AccessTokens,
  user: ClaimsSource,
  session: TokenSessionClaims,
  refreshToken: string,
): Promise<MessageInitShape<typeof TokenPairSchema>> {
  const access = await tokens.issue({
    kind: "user",
    subject: user.userId,
    sessionId: session.id,
    sessionExpiresAt: Math.floor(session.expireTime.getTime() / 1000),
    deviceId: session.deviceId,
    kycLevel: user.kycLevel,
    kycStatus: user.kycStatus,
    permissions: user.permissions,
    amr: amrOf[session.signInMethod],
    emailVerified: user.emailVerified,
  });
  return {
    accessToken: access.token,
    accessTokenExpireTime: timestampFromDate(access.expiresAt),
    refreshToken,
    refreshTokenExpireTime: timestampFromDate(session.expireTime),
    tokenType: "Bearer",
  };
}
