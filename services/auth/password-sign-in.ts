import type { MessageInitShape } from "@bufbuild/protobuf";
import { audit } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { Code, ConnectError, failedPrecondition, invalidArgument, unauthenticated } from "../kernel/errors.js";
import { Violations } from "../kernel/validation.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import { lockouts, signIns } from "../platform/metrics.js";
import { ipLimitKey } from "../policy/client-ip.js";
import type { Sessions } from "../session/sessions.js";
import type { SignInAnswers } from "../session/sign-in-answers.js";
import { userStore, type CredentialRow } from "../users/store.js";
import { SignInMethod, type Device } from "../../gen/portcullis/v1/common_pb.js";
import type { LoginResponseSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { contactVerificationStore } from "./contact-verification-store.js";
import { emailProblem, normalizeEmail } from "./email.js";
import type { EmailVerifications } from "./email-verification.js";
import type { MfaSignIn } from "./mfa-sign-in.js";
import { totpSql } from "./mfa-store.js";
import { hashPassword, passwordProblem, verifyPassword } from "./password.js";

const wrongCredentials = () => unauthenticated("INVALID_CREDENTIALS", "the email or the password is wrong");
const locked = () =>
  new ConnectError("this account is locked for a while after repeated failed sign-ins; try again later", Code.FailedPrecondition);

/**
 * Email and password: argon2id, NIST-style rules, and a progressive lockout.
 * An unknown email costs one argon2id check, like a wrong password, and gets
 * the same answer; so does a locked account, or the lockout would tell who
 * has an account. Only the audit log tells them apart. An address not yet
 * confirmed is told only to someone who gave the right password.
 */
export class PasswordSignIn {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["password"],
    private readonly sessions: Sessions,
    private readonly answers: SignInAnswers,
    /** IPv6 clients' failures are counted by this prefix, as IP rate limits count them. */
    private readonly ipv6PrefixBits: number,
    private readonly emailVerification: Config["account"]["emailVerification"],
    private readonly verifications: EmailVerifications,
    private readonly mfa: MfaSignIn,
  ) {}

  async login(
    request: { email: string; password: string; device?: Device },
    origin: CallOrigin,
  ): Promise<MessageInitShape<typeof LoginResponseSchema>> {
    const email = normalizeEmail(request.email);
    new Violations().add("email", emailProblem(email)).throwIfAny();

    const source = this.source(origin);
    const user = await userStore.credentialsByEmail(this.db, email, source);
    const passwordOk = await verifyPassword(user?.password_hash ?? undefined, request.password);
    if (!user || user.disable_time) {
      signIns.labels("pwd", user ? "disabled" : "unknown_account").inc();
      await audit(this.db, origin, { event: "sign_in", outcome: "failure", userId: user?.id, detail: { method: "pwd", reason: user ? "disabled" : "unknown_email" } });
      throw wrongCredentials();
    }
    if (user.locked) {
      signIns.labels("pwd", "locked").inc();
      await audit(this.db, origin, { event: "sign_in", outcome: "denied", userId: user.id, detail: { method: "pwd", reason: "locked" } });
      throw wrongCredentials();
    }
    if (!passwordOk) {
      signIns.labels("pwd", "wrong_secret").inc();
      await this.recordFailure(user.id, origin);
      throw wrongCredentials();
    }
    if (this.emailVerification === "required" && user.email_verify_time === null) {
      signIns.labels("pwd", "email_not_verified").inc();
      // The password was right: wrong ones before it must not go on counting toward a lockout.
      await userStore.passwordAccepted(this.db, user.id, source, totpSql.enrolled);
      const resent = await this.verifications.resend(user.id, email);
      await audit(this.db, origin, { event: "sign_in", outcome: "denied", userId: user.id, detail: { method: "pwd", reason: "email_not_verified", resent } });
      throw failedPrecondition("EMAIL_NOT_VERIFIED", "confirm your email address with the code or link mailed to it, then sign in");
    }

    const signedIn = await this.db.transaction(async (tx) => {
      // Takes the user's row lock that create() relies on, and sees a disable that landed during the password check.
      const accepted = await userStore.passwordAccepted(tx, user.id, source, totpSql.enrolled);
      if (accepted.disabled) return undefined;
      // An account with a second factor gets a challenge instead of a session: no tokens on the password alone.
      if (accepted.mfa_enrolled) {
        return { mfaChallenge: await this.mfa.challenge(tx, { userId: user.id, method: "pwd", device: request.device!, origin }) };
      }
      return this.sessions.create(tx, { userId: user.id, device: request.device!, method: SignInMethod.PASSWORD, origin, event: { name: "sign_in", detail: { method: "pwd" } } });
    });
    if (signedIn && "mfaChallenge" in signedIn) {
      signIns.labels("pwd", "mfa_required").inc();
      return signedIn;
    }
    if (!signedIn) {
      signIns.labels("pwd", "disabled").inc();
      await audit(this.db, origin, { event: "sign_in", outcome: "failure", userId: user.id, detail: { method: "pwd", reason: "disabled" } });
      throw wrongCredentials();
    }
    return this.answers.signedIn({ user, created: signedIn, device: request.device!, method: "pwd" }, origin);
  }

  /** Checks the current password, sets the new one and signs out every other session. */
  async changePassword(principal: Principal, current: string, next: string, origin: CallOrigin): Promise<number> {
    const user = await userStore.credentialsById(this.db, principal.subject, this.source(origin));
    const violations = new Violations().add("new_password", passwordProblem(next, user?.email ?? ""));
    if (next === current) violations.add("new_password", "choose a password different from the current one");
    violations.throwIfAny();
    // A valid token for a deleted account: treat like a revoked session, as GetProfile does.
    if (!user) throw new ConnectError("this account no longer exists", Code.Unauthenticated);
    if (!user.password_hash) {
      throw new ConnectError("this account signs in by phone and has no password to change", Code.FailedPrecondition);
    }
    await this.checkCurrentPassword(user, current, origin);
    const passwordHash = await hashPassword(next);
    const revoked = await this.sessions.end({
      which: { userId: user.id, except: principal.sessionId },
      reason: "password_changed",
      origin,
      cause: async (tx) => {
        await userStore.setPassword(tx, user.id, passwordHash);
        await contactVerificationStore.closeAllOf(tx, user.id);
      },
      audit: (ids) => [
        { event: "password.change", outcome: "success", userId: user.id, sessionId: principal.sessionId, detail: { revoked_sessions: ids.length } },
      ],
    });
    return revoked.length;
  }

  /** The signed-in user's account with what a password check needs; UNAUTHENTICATED once it is gone, as GetProfile answers. */
  async credentialsOf(principal: Principal, origin: CallOrigin): Promise<CredentialRow> {
    const user = await userStore.credentialsById(this.db, principal.subject, this.source(origin));
    if (!user) throw new ConnectError("this account no longer exists", Code.Unauthenticated);
    return user;
  }

  /**
   * A signed-in user's current password, before a change to how the account
   * signs in: a wrong one counts toward the lockout as a sign-in's would.
   */
  async checkCurrentPassword(user: CredentialRow, password: string, origin: CallOrigin): Promise<void> {
    // Signed in already, so saying so reveals nothing; checking the password first would let a thief keep guessing.
    if (user.locked) throw locked();
    if (!(await verifyPassword(user.password_hash ?? undefined, password))) {
      await this.recordFailure(user.id, origin);
      throw invalidArgument([{ field: "current_password", description: "wrong password" }]);
    }
  }

  private async recordFailure(userId: string, origin: CallOrigin): Promise<void> {
    const { lockoutThreshold, accountLockoutThreshold, lockoutBaseSeconds, lockoutMaxSeconds } = this.settings;
    const policy = { threshold: lockoutThreshold, accountThreshold: accountLockoutThreshold, baseSeconds: lockoutBaseSeconds, maxSeconds: lockoutMaxSeconds };
    const locked = await userStore.passwordRejected(this.db, userId, this.source(origin), policy, origin);
    for (const scope of locked) lockouts.labels(`password_${scope}`).inc();
  }

  /** Where a password try comes from, as the lockout counts it: the client as rate limits count it. */
  private source(origin: CallOrigin): string {
    return ipLimitKey(origin.clientIp, this.ipv6PrefixBits);
  }
}
