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
  /** Whether the account has a confirmed second factor (claim `mfa`). */
  mfaEnrolled?: boolean;
}

/** A second factor as the sign-in or step-up that proved it names it. */
export type SecondFactorKind = "totp" | "recovery_code";

/** What a token pair tells of its session (the user comes from ClaimsSource). */
export interface TokenSessionClaims {
  id: string;
  deviceId: string;
  signInMethod: SignInMethod;
  expireTime: Date;
  /** 2 once a second factor was proved in the session; 1 when absent. */
  aal?: number;
  /** When the second factor was last proved; null or absent for never. */
  mfaTime?: Date | null;
  /** The factor just proved, when the token is issued for it (a refresh knows only that there was one). */
  secondFactor?: SecondFactorKind;
}

const firstFactorAmr: Record<SignInMethod, string[]> = {
  [SignInMethod.UNSPECIFIED]: [],
  [SignInMethod.OTP]: ["otp", "sms"],
  [SignInMethod.PASSWORD]: ["pwd"],
  // RFC 8176 has no value for WebAuthn: "passkey" is ours (with "mfa", as a user-verified passkey is two factors).
  [SignInMethod.PASSKEY]: ["passkey"],
};

/** RFC 8176 has no value for a recovery code: "rc" is ours. */
const secondFactorAmr: Record<SecondFactorKind, string> = { totp: "otp", recovery_code: "rc" };

/** The methods (RFC 8176) that authenticated the session: its first factor, the second one when known, and "mfa" once there were two. */
export function amrOf(session: Pick<TokenSessionClaims, "signInMethod" | "aal" | "secondFactor">): string[] {
  const amr = new Set(firstFactorAmr[session.signInMethod]);
  if (session.secondFactor) amr.add(secondFactorAmr[session.secondFactor]);
  if ((session.aal ?? 1) >= 2) amr.add("mfa");
  return [...amr];
}

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
    amr: amrOf(session),
    emailVerified: user.emailVerified,
    aal: session.aal ?? 1,
    mfaTime: session.mfaTime ? Math.floor(session.mfaTime.getTime() / 1000) : 0,
    mfaEnrolled: user.mfaEnrolled ?? false,
  });
  return {
    accessToken: access.token,
    accessTokenExpireTime: timestampFromDate(access.expiresAt),
    refreshToken,
    refreshTokenExpireTime: timestampFromDate(session.expireTime),
    tokenType: "Bearer",
  };
}
