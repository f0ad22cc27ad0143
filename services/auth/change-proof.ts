import { audit } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { failedPrecondition, invalidArgument } from "../kernel/errors.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import type { Sessions } from "../session/sessions.js";
import type { CredentialRow } from "../users/store.js";
import type { UserRow } from "../users/user.js";
import type { PasswordSignIn } from "./password-sign-in.js";

/**
 * The proof beyond a token that changes which would outlive a password reset
 * need (a new email address or phone number) or that lock the owner out (a
 * second factor): the current
 * password (counted toward the lockout when wrong), or for an account without
 * one a session signed in within the last freshSignInSeconds, since a stolen
 * token alone must not be enough to take the account over.
 */
export class ChangeProofs {
  constructor(
    private readonly db: Database,
    private readonly settings: Pick<Config["account"], "freshSignInSeconds">,
    private readonly passwords: PasswordSignIn,
    private readonly sessions: Sessions,
  ) {}

  /**
   * The account as it stands, or throws unless proved; `event` names the
   * change in the audit row of a refusal. `verifiedEmail`: refuse an account
   * whose email address is not confirmed (for a new address or number, which
   * would outlive the owner's password reset and sign in on its own).
   */
  async prove(principal: Principal, currentPassword: string, event: string, origin: CallOrigin, { verifiedEmail }: { verifiedEmail: boolean }): Promise<UserRow> {
    const who = { userId: principal.subject, sessionId: principal.sessionId };
    const user = await this.passwords.credentialsOf(principal, origin);
    // Whoever registered an address they do not own (EMAIL_VERIFICATION=optional) must not attach a number or
    // address of their own that would outlive the owner's password reset.
    if (verifiedEmail && user.email && !user.email_verify_time) {
      await audit(this.db, origin, { event, outcome: "denied", ...who, detail: { reason: "email_not_verified" } });
      throw failedPrecondition("EMAIL_NOT_VERIFIED", "confirm the account's email address first");
    }
    if (user.password_hash) {
      if (currentPassword === "") {
        throw invalidArgument([{ field: "current_password", description: "required: this account has a password" }]);
      }
      await this.passwords.checkCurrentPassword(user, currentPassword, origin);
      return accountOf(user);
    }
    const session = await this.sessions.current(principal);
    if (Date.now() - session.create_time.getTime() > this.settings.freshSignInSeconds * 1000) {
      await audit(this.db, origin, { event, outcome: "denied", ...who, detail: { reason: "fresh_sign_in_required" } });
      throw failedPrecondition("FRESH_SIGN_IN_REQUIRED", "sign in again to make this change: the sign-in must be recent", {
        max_age_seconds: String(this.settings.freshSignInSeconds),
      });
    }
    return accountOf(user);
  }
}

/** The account without what only a password check needs. */
function accountOf({ password_hash: _hash, locked: _locked, ...account }: CredentialRow): UserRow {
  return account;
}
