import { randomUUID } from "node:crypto";
import { audit, type AuditEntry } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import { hashRefreshToken, type RefreshTokens } from "../tokens/refresh-token.js";
import type { SecondFactorKind, TokenSessionClaims } from "../tokens/token-issuer.js";
import { DeviceType, SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import type { RevocationFeed } from "./feed.js";
import { sessionStore, type SessionRow } from "./store.js";

export interface DeviceInput {
  deviceId: string;
  deviceType: DeviceType;
  deviceName: string;
}

/** A session as a sign-in's token pair describes it, and whose it is. */
export interface SessionClaims extends TokenSessionClaims {
  userId: string;
}

/** A sign-in that creates a session. */
export interface NewSession {
  userId: string;
  device: DeviceInput;
  method: SignInMethod;
  /** The second factor that completed the sign-in, if it took one: the session starts at aal 2. */
  secondFactor?: SecondFactorKind;
  origin: CallOrigin;
  event: { name: "sign_in"; detail: Record<string, string | number | boolean> };
}

/**
 * A passkey with user verification is two factors in one (the device, and the
 * PIN or biometric that unlocks it): NIST SP 800-63B's AAL2, like a second
 * factor. It sets no mfa_time, though: that is when the account's own second
 * factor was last proved, so calls that want a recent one (adding a passkey
 * among them) still ask an account with TOTP for it.
 */
function startsAtAal2(signIn: NewSession): boolean {
  return signIn.secondFactor !== undefined || signIn.method === SignInMethod.PASSKEY;
}

export interface CreatedSession {
  session: SessionClaims;
  refreshToken: string;
  /** Sessions revoked to stay within the per-user limit: publish them once the transaction commits. */
  evicted: string[];
}

export type RevokeReason =
  | "logout"
  | "evicted"
  | "password_changed"
  | "password_reset"
  | "refresh_token_reused"
  | "revoked_by_user"
  | "revoked_by_admin"
  | "account_disabled";

/** Holders may sign out anyone's session (support, incident response). */
export const sessionAdminPermission = "session.admin";

/** Which sessions to end: by id, or all of a user's but one. */
export type SessionSelection = { sessionIds: string[] } | { userId: string; except?: string };

export interface Ending {
  which: SessionSelection;
  reason: RevokeReason;
  origin: CallOrigin;
  /** The audit rows that tell of it, given the sessions that ended. */
  audit(revoked: string[]): AuditEntry[];
  /** The change that ends them (a new password, a disabled account), run first in the same transaction. */
  cause?(tx: Sql): Promise<void>;
}

/**
 * Device sessions in Postgres, the truth; revocations are also published to
 * every instance, which check them in memory on each call.
 */
export class Sessions {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["session"],
    private readonly feed: RevocationFeed,
    /** How long an access token can outlive its session's revocation. */
    private readonly accessTokenLifetimeMs: number,
    private readonly refreshTokens: RefreshTokens,
  ) {}

  /** One session for one sign-in: see `createMany`. */
  async create(tx: Sql, signIn: NewSession): Promise<CreatedSession> {
    const [created] = await this.createMany(tx, [signIn]);
    return created!;
  }

  /**
   * Creates sessions and their first refresh tokens inside the sign-ins'
   * transaction, and audits each sign-in; beyond the per-user limit the
   * oldest live sessions are revoked. The caller holds each user's row lock
   * (taken by an earlier statement of the transaction that wrote the user's
   * row), so two sign-ins cannot both stay under the limit: this statement's
   * snapshot is taken after that lock and sees theirs. At most one sign-in per
   * user in one call. Call `published` with `evicted` once the transaction
   * commits.
   */
  async createMany(tx: Sql, signIns: NewSession[]): Promise<CreatedSession[]> {
    if (signIns.length === 0) return [];
    const now = Date.now();
    const expireTime = new Date(now + this.settings.lifetimeSeconds * 1000);
    const idleExpireTime = new Date(Math.min(now + this.settings.idleTimeoutSeconds * 1000, expireTime.getTime()));
    const created = signIns.map((signIn): CreatedSession => ({
      session: {
        id: randomUUID(),
        userId: signIn.userId,
        deviceId: signIn.device.deviceId,
        signInMethod: signIn.method,
        expireTime,
        aal: startsAtAal2(signIn) ? 2 : 1,
        mfaTime: signIn.secondFactor ? new Date(now) : null,
        secondFactor: signIn.secondFactor,
      },
      refreshToken: this.refreshTokens.mint(signIn.userId),
      evicted: [],
    }));
    const evicted = await sessionStore.create(
      tx,
      signIns.map((signIn, i) => ({
        id: created[i]!.session.id,
        userId: signIn.userId,
        deviceId: signIn.device.deviceId,
        deviceType: DeviceType[signIn.device.deviceType] as keyof typeof DeviceType,
        deviceName: signIn.device.deviceName,
        signInMethod: SignInMethod[signIn.method] as keyof typeof SignInMethod,
        aal: created[i]!.session.aal ?? 1,
        mfaTime: created[i]!.session.mfaTime ?? null,
        tokenHash: hashRefreshToken(created[i]!.refreshToken),
        origin: signIn.origin,
        event: signIn.event.name,
        detail: signIn.event.detail,
      })),
      { idleExpireTime, expireTime, maxPerUser: this.settings.maxPerUser },
    );
    const byUser = new Map(created.map((one) => [one.session.userId, one]));
    for (const row of evicted) byUser.get(row.user_id)!.evicted.push(row.id);
    return created;
  }

  /**
   * The one way to end sessions: revokes them, audits it and, once the
   * transaction has committed, tells every instance, so their access tokens
   * stop working everywhere. Returns the sessions ended.
   */
  async end(ending: Ending): Promise<string[]> {
    const revoked = await this.db.transaction(async (tx) => {
      await ending.cause?.(tx);
      const ids = await sessionStore.revoke(tx, ending.which, ending.reason);
      for (const entry of ending.audit(ids)) await audit(tx, ending.origin, entry);
      return ids;
    });
    await this.published(revoked);
    return revoked;
  }

  /** The caller's own session; UNAUTHENTICATED once it is gone. */
  async current(principal: Principal): Promise<SessionRow> {
    const row = await sessionStore.find(this.db, principal.sessionId, principal.subject);
    if (!row) throw new ConnectError("this session no longer exists", Code.Unauthenticated);
    return row;
  }

  /** A page of a user's live sessions, newest first, and where the next page starts. */
  async list(userId: string, pageSize: number, after?: [Date, string]) {
    const rows = await sessionStore.listLive(this.db, userId, after, pageSize + 1);
    const page = rows.slice(0, pageSize);
    const last = rows.length > pageSize ? page.at(-1) : undefined;
    return { page, next: last && ([last.create_time, last.id] as [Date, string]) };
  }

  /** Signs out one session: the caller's own, or anyone's with the session.admin permission. */
  async revokeOne(caller: Principal, sessionId: string, origin: CallOrigin): Promise<void> {
    const owner = await sessionStore.ownerOf(this.db, sessionId);
    // Another user's session answers like a missing one: ids are not to be probed.
    if (!owner || (owner !== caller.subject && !caller.permissions.includes(sessionAdminPermission))) {
      throw new ConnectError("no such session", Code.NotFound);
    }
    await this.revokeAs(caller, { sessionIds: [sessionId] }, owner, origin);
  }

  /** Signs out every session of the caller, or every other one. */
  revokeAll(caller: Principal, keepCurrent: boolean, origin: CallOrigin): Promise<string[]> {
    return this.revokeAs(caller, { userId: caller.subject, except: keepCurrent ? caller.sessionId : undefined }, caller.subject, origin);
  }

  private revokeAs(caller: Principal, which: SessionSelection, owner: string, origin: CallOrigin): Promise<string[]> {
    const by = caller.subject;
    const reason = owner === by ? "revoked_by_user" : "revoked_by_admin";
    return this.end({
      which,
      reason,
      origin,
      audit: (revoked) => revoked.map((sessionId) => ({ event: "session.revoke", outcome: "success", userId: owner, sessionId, detail: { by, reason } })),
    });
  }

  /** Tells every instance, after commit, that these sessions' access tokens are dead. */
  published(sessionIds: string[]): Promise<void> {
    return this.feed.publish({ kind: "revoked", sessionIds, untilMs: Date.now() + this.accessTokenLifetimeMs });
  }
}
