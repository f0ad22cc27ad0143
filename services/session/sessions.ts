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

/** A sign-in that creates a session. */
export interface NewSession {
  userId: string;
  device: DeviceInput;
  method: SignInMethod;
  origin: AuditOrigin;
  event: { name: "sign_in" | "register"; detail: Record<string, string | number | boolean> };
}

export interface CreatedSession {
  session: SessionRow;
  refreshToken: string;
  /** Sessions revoked to stay within the per-user limit: publish them once the transaction commits. */
  evicted: string[];
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
    const created = signIns.map((signIn) => ({
      session: { id: randomUUID(), userId: signIn.userId, deviceId: signIn.device.deviceId, signInMethod: signIn.method, expireTime },
      refreshToken: this.refreshTokens.mint(signIn.userId),
      evicted: [] as string[],
    }));
    const column = <T>(value: (signIn: NewSession) => T) => signIns.map(value);
    const evicted = await tx.query<{ id: string; user_id: string }>(
      `with input as (
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::text[], $11::text[], $12::jsonb[])
           as i(id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, token_hash, event, request_id, detail)),
       evicted as (
         update session set revoke_time = now(), revoke_reason = 'evicted'
         where id in (
           select id from (
             select id, row_number() over (partition by user_id order by create_time desc) as newest
             from session where user_id in (select user_id from input)
               and revoke_time is null and expire_time > now() and idle_expire_time > now()) live
           where newest >= $15)
         returning id, user_id),
       created as (
         insert into session (id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, idle_expire_time, expire_time)
         select id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, $13, $14 from input),
       token as (
         insert into refresh_token (token_hash, session_id, expire_time) select token_hash, id, $14 from input),
       audited as (
         insert into audit_event (event, outcome, user_id, session_id, ip_address, user_agent, request_id, detail)
         select event, 'success', user_id, id, ip_address, user_agent, request_id,
                detail || jsonb_build_object('evicted', (select count(*) from evicted where evicted.user_id = input.user_id))
         from input)
       select id, user_id from evicted`,
      [
        created.map((one) => one.session.id),
        column((signIn) => signIn.userId),
        column((signIn) => signIn.device.deviceId),
        column((signIn) => DeviceType[signIn.device.deviceType]),
        column((signIn) => signIn.device.deviceName),
        column((signIn) => signIn.origin.clientIp),
        column((signIn) => signIn.origin.userAgent),
        column((signIn) => SignInMethod[signIn.method]),
        created.map((one) => hashRefreshToken(one.refreshToken)),
        column((signIn) => signIn.event.name),
        column((signIn) => signIn.origin.requestId),
        column((signIn) => JSON.stringify(signIn.event.detail)),
        idleExpireTime,
        expireTime,
        this.settings.maxPerUser,
      ],
    );
    const byUser = new Map(created.map((one) => [one.session.userId, one]));
    for (const row of evicted) byUser.get(row.user_id)!.evicted.push(row.id);
    return created;
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
