import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { audit, type AuditOrigin } from "../platform/audit.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import { Code, ConnectError, invalidArgument, unauthenticated } from "../platform/errors.js";
import { textProblem, Violations } from "../platform/validation.js";
import type { Sessions } from "../session/sessions.js";
import type { AccessTokens, Principal } from "../tokens/access-token.js";
import { issueTokenPair } from "../tokens/token-issuer.js";
import { SignInMethod, type Device } from "../../gen/portcullis/v1/common_pb.js";
import type { LoginResponseSchema, RegisterResponseSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { emailProblem, normalizeEmail } from "./email.js";
import { hashPassword, passwordProblem, verifyPassword } from "./password.js";
import { checkDevice, claimsOf, userColumns, userMessage, type UserRow } from "./users.js";

const wrongCredentials = () => unauthenticated("INVALID_CREDENTIALS", "the email or the password is wrong");
const locked = () =>
  new ConnectError("this account is locked for a while after repeated failed sign-ins; try again later", Code.FailedPrecondition);

interface CredentialRow extends UserRow {
  password_hash: string | null;
  locked: boolean;
  failed_logins: number;
  lockouts: number;
}

/**
 * Email and password: argon2id, NIST-style rules, and a progressive lockout.
 * An unknown email costs one argon2id check, like a wrong password, and gets
 * the same answer.
 */
export class PasswordSignIn {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["password"],
    private readonly sessions: Sessions,
    private readonly tokens: AccessTokens,
  ) {}

  async register(
    request: { email: string; password: string; displayName: string; device?: Device },
    origin: AuditOrigin,
  ): Promise<MessageInitShape<typeof RegisterResponseSchema>> {
    const email = normalizeEmail(request.email);
    const violations = new Violations()
      .add("email", emailProblem(email))
      .add("password", passwordProblem(request.password, email))
      .add("display_name", textProblem(request.displayName, 0, 100));
    const device = checkDevice(request.device, violations);
    violations.throwIfAny();

    const passwordHash = await hashPassword(request.password);
    const signedIn = await this.db.transaction(async (tx) => {
      const [user] = await tx.query<UserRow>(
        `insert into app_user (id, email, password_hash, display_name) values ($1, $2, $3, $4)
         on conflict (email) do nothing returning ${userColumns}`,
        [randomUUID(), email, passwordHash, request.displayName],
      );
      if (!user) return undefined;
      const created = await this.sessions.create(tx, {
        userId: user.id,
        device,
        method: SignInMethod.PASSWORD,
        origin,
        event: { name: "register", detail: { method: "pwd" } },
      });
      return { user, ...created };
    });
    if (!signedIn) {
      throw new ConnectError("an account with this email exists; sign in instead", Code.AlreadyExists);
    }
    return {
      tokens: await issueTokenPair(this.tokens, claimsOf(signedIn.user), signedIn.session, signedIn.refreshToken),
      user: userMessage(signedIn.user),
      sessionId: signedIn.session.id,
    };
  }

  async login(
    request: { email: string; password: string; device?: Device },
    origin: AuditOrigin,
  ): Promise<MessageInitShape<typeof LoginResponseSchema>> {
    const email = normalizeEmail(request.email);
    const violations = new Violations()
      .add("email", emailProblem(email))
      .add("password", request.password.length === 0 ? "required" : undefined);
    const device = checkDevice(request.device, violations);
    violations.throwIfAny();

    const [user] = await this.db.query<CredentialRow>(
      `select ${userColumns}, password_hash, failed_logins, lockouts, coalesce(locked_until > now(), false) as locked from app_user where email = $1`,
      [email],
    );
    const passwordOk = await verifyPassword(user?.password_hash ?? undefined, request.password);
    if (!user || user.disable_time) {
      await audit(this.db, origin, { event: "sign_in", outcome: "failure", userId: user?.id, detail: { method: "pwd", reason: user ? "disabled" : "unknown_email" } });
      throw wrongCredentials();
    }
    if (user.locked) {
      await audit(this.db, origin, { event: "sign_in", outcome: "denied", userId: user.id, detail: { method: "pwd", reason: "locked" } });
      throw locked();
    }
    if (!passwordOk) {
      await this.recordFailure(user.id, origin);
      throw wrongCredentials();
    }

    const signedIn = await this.db.transaction(async (tx) => {
      // Takes the user's row lock that create() relies on, and sees a disable that landed during the password check.
      const [state] = await tx.query<{ disabled: boolean }>(
        "update app_user set failed_logins = 0, lockouts = 0 where id = $1 returning disable_time is not null as disabled",
        [user.id],
      );
      if (state!.disabled) return undefined;
      return this.sessions.create(tx, { userId: user.id, device, method: SignInMethod.PASSWORD, origin, event: { name: "sign_in", detail: { method: "pwd" } } });
    });
    if (!signedIn) {
      await audit(this.db, origin, { event: "sign_in", outcome: "failure", userId: user.id, detail: { method: "pwd", reason: "disabled" } });
      throw wrongCredentials();
    }
    await this.sessions.published(signedIn.evicted);
    return {
      tokens: await issueTokenPair(this.tokens, claimsOf(user), signedIn.session, signedIn.refreshToken),
      user: userMessage(user),
      sessionId: signedIn.session.id,
    };
  }

  /** Checks the current password, sets the new one and signs out every other session. */
  async changePassword(principal: Principal, current: string, next: string, origin: AuditOrigin): Promise<number> {
    const [user] = await this.db.query<CredentialRow>(
      `select ${userColumns}, password_hash, failed_logins, lockouts, coalesce(locked_until > now(), false) as locked from app_user where id = $1`,
      [principal.subject],
    );
    const violations = new Violations()
      .add("current_password", current.length === 0 ? "required" : undefined)
      .add("new_password", passwordProblem(next, user?.email ?? ""));
    if (next.length > 0 && next === current) violations.add("new_password", "choose a password different from the current one");
    violations.throwIfAny();
    if (!user?.password_hash) {
      throw new ConnectError("this account signs in by phone and has no password to change", Code.FailedPrecondition);
    }
    if (user.locked) throw locked();
    if (!(await verifyPassword(user.password_hash, current))) {
      await this.recordFailure(user.id, origin);
      throw invalidArgument([{ field: "current_password", description: "wrong password" }]);
    }
    const passwordHash = await hashPassword(next);
    const revoked = await this.db.transaction(async (tx) => {
      await tx.query("update app_user set password_hash = $1, failed_logins = 0, update_time = now() where id = $2", [passwordHash, user.id]);
      const ids = await this.sessions.revoke(tx, { userId: user.id, except: principal.sessionId }, "password_changed");
      await audit(tx, origin, { event: "password.change", outcome: "success", userId: user.id, sessionId: principal.sessionId, detail: { revoked_sessions: ids.length } });
      return ids;
    });
    await this.sessions.published(revoked);
    return revoked.length;
  }

  /**
   * Counts a wrong password; the Nth consecutive one locks the account for
   * base × 2^(earlier lockouts), so repeated attacks wait longer each time.
   */
  private async recordFailure(userId: string, origin: AuditOrigin): Promise<void> {
    // One statement, as an unknown email's one audit insert: the two cost the same time.
    await this.db.query(
      `with state as (
         update app_user set
           failed_logins = case when failed_logins + 1 >= $1 then 0 else failed_logins + 1 end,
           lockouts = case when failed_logins + 1 >= $1 then lockouts + 1 else lockouts end,
           locked_until = case when failed_logins + 1 >= $1 then now() + make_interval(secs => $2 * power(2, least(lockouts, 10))) else locked_until end
         where id = $3 returning id, failed_logins, lockouts, locked_until)
       insert into audit_event (event, outcome, user_id, ip_address, user_agent, request_id, detail)
       select 'sign_in', 'failure', id, $4, $5, $6, '{"method": "pwd", "reason": "wrong_password"}' from state
       union all
       select 'account.locked', 'denied', id, $4, $5, $6, jsonb_build_object('lockouts', lockouts, 'until', locked_until)
       from state where failed_logins = 0`,
      [this.settings.lockoutThreshold, this.settings.lockoutBaseSeconds, userId, origin.clientIp, origin.userAgent, origin.requestId],
    );
  }
}
