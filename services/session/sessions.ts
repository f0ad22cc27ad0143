import { randomUUID } from "node:crypto";
import type { Config } from "../platform/config.js";
import { hashRefreshToken, type RefreshTokens } from "../tokens/refresh-token.js";
import type { AuditOrigin } from "../platform/audit.js";
import type { Sql } from "../platform/database.js";
import type { FeedEvent, RevocationFeed } from "./revocation-feed.js";
import { DeviceType, SignInMethod } from "../../gen/portcullis/v1/common_pb.js";

export interface DeviceInput {
  deviceId: string;
  deviceType: DeviceType;
  deviceName: string;
}

export interface SessionRow {
  id: string;
  userId: string;
  deviceId: string;
  signInMethod: SignInMethod;
  expireTime: Date;
}

export type RevokeReason = "logout" | "evicted" | "password_changed" | "refresh_token_reused" | "revoked_by_user" | "revoked_by_admin" | "account_disabled";

/**
 * Device sessions in Postgres, the truth; revocations are also published to
 * every instance, which check them in memory on each call.
 */
export class Sessions {
  constructor(
    private readonly settings: Config["session"],
    private readonly feed: RevocationFeed,
    /** How long an access token can outlive its session's revocation. */
    private readonly accessTokenLifetimeMs: number,
    private readonly refreshTokens: RefreshTokens,
  ) {}

  /**
   * Creates a session and its first refresh token inside the sign-in
   * transaction, and audits the sign-in; beyond the per-user limit the oldest
   * live sessions are revoked. The caller holds the user's row lock (taken
   * by an earlier statement of the transaction that wrote the user's row), so two sign-ins
   * cannot both stay under the limit; this statement's snapshot is taken after
   * that lock and sees theirs. Call `published` with `evicted` once the
   * transaction commits.
   */
  async create(
    tx: Sql,
    userId: string,
    device: DeviceInput,
    method: SignInMethod,
    origin: AuditOrigin,
    event: { name: "sign_in" | "register"; detail: Record<string, string | number | boolean> },
  ): Promise<{ session: SessionRow; refreshToken: string; evicted: string[] }> {
    const id = randomUUID();
    const now = Date.now();
    const expireTime = new Date(now + this.settings.lifetimeSeconds * 1000);
    const idleExpireTime = new Date(Math.min(now + this.settings.idleTimeoutSeconds * 1000, expireTime.getTime()));
    const refreshToken = this.refreshTokens.mint(userId);
    const userAgent = origin.userAgent.slice(0, 512);
    // One round trip: evict, create, store the refresh token, audit.
    const evicted = await tx.query<{ id: string }>(
      `with evicted as (
         update session set revoke_time = now(), revoke_reason = 'evicted'
         where id in (select id from session where user_id = $2 and revoke_time is null and expire_time > now()
                      order by create_time desc offset $11)
         returning id),
       created as (
         insert into session (id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, idle_expire_time, expire_time)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning id),
       token as (
         insert into refresh_token (token_hash, session_id, expire_time) select $12, id, $10 from created),
       audited as (
         insert into audit_event (event, outcome, user_id, session_id, ip_address, user_agent, request_id, detail)
         select $13, 'success', $2, id, $6, $7, $14, $15::jsonb || jsonb_build_object('evicted', (select count(*) from evicted)) from created)
       select id from evicted`,
      [
        id, userId, device.deviceId, DeviceType[device.deviceType], device.deviceName, origin.clientIp, userAgent, SignInMethod[method], idleExpireTime, expireTime,
        this.settings.maxPerUser - 1, hashRefreshToken(refreshToken), event.name, origin.requestId, JSON.stringify(event.detail),
      ],
    );
    return {
      session: { id, userId, deviceId: device.deviceId, signInMethod: method, expireTime },
      refreshToken,
      evicted: evicted.map((row) => row.id),
    };
  }

  /** Revokes live sessions; returns their ids. Publish them once the transaction commits. */
  async revoke(
    tx: Sql,
    which: { sessionIds: string[] } | { userId: string; except?: string },
    reason: RevokeReason,
  ): Promise<string[]> {
    const rows =
      "sessionIds" in which
        ? await tx.query<{ id: string }>(
            "update session set revoke_time = now(), revoke_reason = $1 where id = any($2::uuid[]) and revoke_time is null returning id",
            [reason, which.sessionIds],
          )
        : await tx.query<{ id: string }>(
            `update session set revoke_time = now(), revoke_reason = $1
             where user_id = $2 and revoke_time is null and id is distinct from $3::uuid returning id`,
            [reason, which.userId, which.except ?? null],
          );
    return rows.map((row) => row.id);
  }

  /** Tells every instance, after commit, that these sessions' access tokens are dead. */
  published(sessionIds: string[]): Promise<void> {
    return this.feed.publish({ kind: "revoked", sessionIds, untilMs: Date.now() + this.accessTokenLifetimeMs });
  }

  /**
   * Session changes recent enough that tokens issued before them may still be
   * alive: revocations, and KYC levels lowered; only those of the last
   * `windowMs` when given. Postgres is the truth the feed catches up from and
   * re-reads every second; both ask Postgres's clock, never this process's.
   */
  static async recentChanges(sql: Sql, accessTokenLifetimeMs: number, windowMs = accessTokenLifetimeMs): Promise<FeedEvent[]> {
    const windowSeconds = Math.min(windowMs, accessTokenLifetimeMs) / 1000;
    const revoked = await sql.query<{ id: string; revoke_time: Date }>(
      "select id, revoke_time from session where revoke_time > now() - make_interval(secs => $1)",
      [windowSeconds],
    );
    const lowered = await sql.query<{ id: string; kyc_level: number; kyc_lower_time: Date }>(
      "select id, kyc_level, kyc_lower_time from app_user where kyc_lower_time > now() - make_interval(secs => $1)",
      [windowSeconds],
    );
    return [
      ...revoked.map((row): FeedEvent => ({
        kind: "revoked",
        sessionIds: [row.id],
        untilMs: row.revoke_time.getTime() + accessTokenLifetimeMs,
      })),
      ...lowered.map((row): FeedEvent => {
        const sinceMs = row.kyc_lower_time.getTime();
        return { kind: "kyc_lowered", userId: row.id, level: row.kyc_level, sinceMs, untilMs: sinceMs + accessTokenLifetimeMs };
      }),
    ];
  }
}
