import { audit } from "../audit/store.js";
import { contactVerificationStore } from "../auth/contact-verification-store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import { pageOf } from "../kernel/pagination.js";
import type { Database, Sql } from "../platform/database.js";
import type { RevocationFeed } from "../session/feed.js";
import type { Sessions } from "../session/sessions.js";
import { sessionStore } from "../session/store.js";
import { userStore, type ManagedUserRow, type UserFilter } from "../users/store.js";

/**
 * Who acts, as the audit log names them (detail.actor): an operator's user
 * id, or "os:<name>" for the command-line tool run by someone on a server.
 */
export type Actor = string;

/** An account as operators see it. */
export interface ManagedUser extends ManagedUserRow {
  activeSessions: number;
}

/** Filters by their names in the contract: which kinds of filter a read used, never their values (a prefix can be personal data). */
const filterNames: Record<keyof UserFilter, string> = {
  emailPrefix: "email_prefix",
  phonePrefix: "phone_prefix",
  status: "status",
  kycLevel: "kyc_level",
};

/** The contract names of the filters a read used, comma-separated, for its audit row. */
export function filtersUsed<F extends object>(filter: F, names: Record<keyof F, string>): string {
  return (Object.keys(filter) as (keyof F)[]).filter((name) => filter[name] !== undefined).map((name) => names[name]).join(",");
}

const noSuchUser = () => new ConnectError("no such user", Code.NotFound);

/**
 * Operators' management of accounts: each change in one transaction with
 * its audit row naming the operator, each read audited too. Nobody acts on
 * their own account or grants themselves a permission, which would escape
 * review (as a KYC reviewer cannot review themselves); giving up one's own
 * permission is allowed.
 */
export class Accounts {
  constructor(
    private readonly db: Database,
    private readonly sessions: Sessions,
    private readonly feed: RevocationFeed,
    /** How long a token issued before a change may still be presented. */
    private readonly accessTokenLifetimeMs: number,
  ) {}

  /** A page of accounts, newest first, and the token of the next page ("" after the last). */
  list(actor: Actor, filter: UserFilter, pageSize: number, after: [string, string] | undefined, origin: CallOrigin) {
    return this.db.transaction(async (tx) => {
      const { page, nextPageToken } = pageOf(await userStore.listManaged(tx, filter, after, pageSize + 1), pageSize);
      const users = await this.withSessions(tx, page);
      await audit(tx, origin, { event: "admin.read", outcome: "success", detail: { actor, call: "list_users", filter: filtersUsed(filter, filterNames) } });
      return { page: users, nextPageToken };
    });
  }

  get(actor: Actor, userId: string, origin: CallOrigin): Promise<ManagedUser> {
    return this.db.transaction(async (tx) => {
      const row = await userStore.findManaged(tx, userId);
      if (!row) throw noSuchUser();
      await audit(tx, origin, { event: "admin.read", outcome: "success", userId, detail: { actor, call: "get_user" } });
      const [user] = await this.withSessions(tx, [row]);
      return user!;
    });
  }

  /** Disables the account and signs out every session it has, on every instance; returns how many. */
  async disable(actor: Actor, userId: string, reason: string, origin: CallOrigin): Promise<number> {
    await this.refuseSelf(actor, userId, "account.disable", origin);
    const revoked = await this.sessions.end({
      which: { userId },
      reason: "account_disabled",
      origin,
      cause: async (tx) => {
        if (!(await userStore.setDisabled(tx, userId, true))) throw noSuchUser();
        await contactVerificationStore.closeAllOf(tx, userId);
      },
      audit: (ids) => [{ event: "account.disable", outcome: "success", userId, detail: { actor, reason, revoked_sessions: ids.length } }],
    });
    return revoked.length;
  }

  async enable(actor: Actor, userId: string, origin: CallOrigin): Promise<void> {
    await this.refuseSelf(actor, userId, "account.enable", origin);
    await this.db.transaction(async (tx) => {
      if (!(await userStore.setDisabled(tx, userId, false))) throw noSuchUser();
      await audit(tx, origin, { event: "account.enable", outcome: "success", userId, detail: { actor } });
    });
  }

  /** Clears every password lockout of the account; whether one was in force. */
  async unlock(actor: Actor, userId: string, origin: CallOrigin): Promise<boolean> {
    await this.refuseSelf(actor, userId, "account.unlock", origin);
    return this.db.transaction(async (tx) => {
      if (!(await userStore.find(tx, userId))) throw noSuchUser();
      const wasLocked = await userStore.clearLockouts(tx, userId);
      await audit(tx, origin, { event: "account.unlock", outcome: "success", userId, detail: { actor, was_locked: wasLocked } });
      return wasLocked;
    });
  }

  /** Returns the account's permissions now; the user's token carries the new one from its next refresh. */
  async grant(actor: Actor, userId: string, permission: string, origin: CallOrigin): Promise<string[]> {
    await this.refuseSelf(actor, userId, "permission.grant", origin, { permission });
    return this.db.transaction(async (tx) => {
      const permissions = await userStore.grantPermission(tx, userId, permission);
      if (!permissions) throw noSuchUser();
      await audit(tx, origin, { event: "permission.grant", outcome: "success", userId, detail: { actor, permission } });
      return permissions;
    });
  }

  /**
   * Returns the account's permissions now. Tokens issued before it lose the
   * permission at their next call on every instance, not at their next refresh.
   */
  async revoke(actor: Actor, userId: string, permission: string, origin: CallOrigin): Promise<string[]> {
    const { permissions, lowerTime } = await this.db.transaction(async (tx) => {
      const lowered = await userStore.revokePermission(tx, userId, permission);
      if (!lowered) throw noSuchUser();
      await audit(tx, origin, { event: "permission.revoke", outcome: "success", userId, detail: { actor, permission } });
      return lowered;
    });
    const sinceMs = lowerTime.getTime();
    await this.feed.publish({ kind: "permissions_lowered", userId, permissions, sinceMs, untilMs: sinceMs + this.accessTokenLifetimeMs });
    return permissions;
  }

  /** An operator acting on their own account is refused, and the attempt kept in the audit log. */
  private async refuseSelf(actor: Actor, userId: string, event: string, origin: CallOrigin, detail: Record<string, string> = {}): Promise<void> {
    // The contract lets a UUID through in upper case too, and Postgres matches either: compare one spelling.
    if (actor.toLowerCase() !== userId.toLowerCase()) return;
    await audit(this.db, origin, { event, outcome: "denied", userId, detail: { actor, ...detail, reason: "own_account" } });
    throw new ConnectError("operators cannot act on their own account", Code.PermissionDenied);
  }

  private async withSessions(sql: Sql, rows: ManagedUserRow[]): Promise<ManagedUser[]> {
    const live = await sessionStore.liveCounts(sql, rows.map((row) => row.id));
    return rows.map((row) => ({ ...row, activeSessions: live.get(row.id) ?? 0 }));
  }
}
