import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CallOrigin } from "../kernel/call.js";
import { signIns } from "../platform/metrics.js";
import type { AccessTokens } from "../tokens/access-token.js";
import { issueTokenPair } from "../tokens/token-issuer.js";
import { claimsOf, userMessage, type UserRow } from "../users/user.js";
import type { UserSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { TokenPairSchema } from "../../gen/portcullis/v1/common_pb.js";
import type { CreatedSession, DeviceInput, Sessions } from "./sessions.js";

/** A sign-in whose session has committed, as the new-device notice tells of it. */
export interface CommittedSignIn {
  user: UserRow;
  sessionId: string;
  device: DeviceInput;
  /** The first factor, as the metrics and the audit log name it. */
  method: "pwd" | "otp" | "passkey";
}

/** Tells an owner of a sign-in from a device new to the account; it returns at once. */
export interface SignInNotices {
  signedIn(signIn: CommittedSignIn, origin: CallOrigin): void;
}

/** What every way of signing in answers once a session is made. */
export interface SignedInAnswer {
  tokens: MessageInitShape<typeof TokenPairSchema>;
  user: MessageInitShape<typeof UserSchema>;
  sessionId: string;
}

/**
 * What every sign-in does once its session has committed, whichever factors
 * proved the user: count it, tell the other instances of the sessions it
 * evicted, start the new-device check, and hand out the token pair.
 */
export class SignInAnswers {
  constructor(
    private readonly sessions: Pick<Sessions, "published">,
    private readonly tokens: AccessTokens,
    private readonly notices: SignInNotices,
  ) {}

  async signedIn(
    { user, created, device, method, mfaEnrolled }: Omit<CommittedSignIn, "sessionId"> & { created: CreatedSession; mfaEnrolled?: boolean },
    origin: CallOrigin,
  ): Promise<SignedInAnswer> {
    signIns.labels(method, "success").inc();
    await this.sessions.published(created.evicted);
    this.notices.signedIn({ user, sessionId: created.session.id, device, method }, origin);
    return {
      tokens: await issueTokenPair(this.tokens, { ...claimsOf(user), mfaEnrolled }, created.session, created.refreshToken),
      user: userMessage(user),
      sessionId: created.session.id,
    };
  }
}
