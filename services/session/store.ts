import { insertAuditEvents } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import type { Database, Sql } from "../platform/database.js";
import { userSql } from "../users/store.js";
import type { DeviceType, SignInMethod } from "../../gen/portcullis/v1/common_pb.js";

/** A session row as the SessionService shows it. */
export interface SessionRow {
  id: string;
  user_id: string;
  device_id: string;
  device_type: keyof typeof DeviceType;
  device_name: string;
  ip_address: string;
  user_agent: string;
  sign_in_method: keyof typeof SignInMethod;
  create_time: Date;
  last_active_time: Date;
  idle_expire_time: Date;
  expire_time: Date;
}

/** A session a refresh token belongs to, and its user as the new access token will describe them. */
export interface RefreshedSession {
  id: string;
  user_id: string;
  device_id: string;
  sign_in_method: keyof typeof SignInMethod;
  expire_time: Date;
  kyc_level: number;
  kyc_status: string;
  permissions: string[];
  email_verified: boolean;
  aal: number;
  mfa_time: Date | null;
  /** Whether the account has a second factor now (see SecondFactorSql). */
  mfa_enrolled: boolean;
}

/**
 * SQL true when the account `userIdExpression` names has a confirmed second
 * factor, in one indexed lookup: the auth domain owns that table, a floor
 * above this one, so app.ts passes its fragment in.
 */
export type SecondFactorSql = (userIdExpression: string) => string;

/** A session just raised to aal 2, and its user as the new access token describes them. */
export type SteppedUpSession = Omit<RefreshedSession, "aal" | "mfa_time" | "mfa_enrolled"> & { mfa_time: Date };

/** One sign-in's new session, its first refresh token and its audit row, as `createSessions` takes them. */
export interface SessionInsert {
  id: string;
  userId: string;
  deviceId: string;
  deviceType: keyof typeof DeviceType;
  deviceName: string;
  signInMethod: keyof typeof SignInMethod;
  /** 2 for a sign-in completed with a second factor (then mfaTime is its time). */
  aal: number;
  mfaTime: Date | null;
  tokenHash: Buffer;
  origin: CallOrigin;
  event: string;
  detail: Record<string, string | number | boolean>;
}

/** A refresh token to use up and the successor to store, with the origin of the call, as `rotate` takes them. */
export interface RotationInput {
  tokenHash: Buffer;
  successorHash: Buffer;
  origin: CallOrigin;
}

const liveSession = "revoke_time is null and expire_time > now() and idle_expire_time > now()";
const sessionColumns =
  "id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, create_time, last_active_time, idle_expire_time, expire_time";

/**
 * Creates sessions, their first refresh tokens and their audit rows in one
 * statement; beyond the per-user limit ($15) the oldest live sessions are
 * revoked ('evicted'), and returned.
 */
const createSql = `
  with input as (
    select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::text[], $11::text[], $12::jsonb[],
                         $16::smallint[], $17::timestamptz[])
      as i(id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, token_hash, event, request_id, detail, aal, mfa_time)),
  evicted as (
    update session set revoke_time = now(), revoke_reason = 'evicted'
    where id in (
      select id from (
        select id, row_number() over (partition by user_id order by create_time desc) as newest
        from session where user_id in (select user_id from input)
          and ${liveSession}) live
      where newest >= $15)
    returning id, user_id),
  created as (
    insert into session (id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, aal, mfa_time, idle_expire_time, expire_time)
    select id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, aal, mfa_time, $13, $14 from input),
  token as (
    insert into refresh_token (token_hash, session_id, expire_time) select token_hash, id, $14 from input),
  audited as (
    ${insertAuditEvents(["event", "outcome", "user_id", "session_id", "ip_address", "user_agent", "request_id", "detail"])}
    select event, 'success', user_id, id, ip_address, user_agent, request_id,
           detail || jsonb_build_object('evicted', (select count(*) from evicted where evicted.user_id = input.user_id))
    from input)
  select id, user_id from evicted`;

/**
 * Each token is used at most once (`use_time is null`, under its row lock), its
 * live session extended ($6 seconds of idle time), its successor stored and the
 * refresh audited with that request's own origin; one row back per rotation,
 * by input position, with whether the user has a second factor (`enrolled`).
 */
const rotateSql = (enrolled: SecondFactorSql) => `
  with input as (
    select * from unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[], $5::text[])
      with ordinality as i(token_hash, successor_hash, ip_address, user_agent, request_id, position)),
  used as (
    update refresh_token t set use_time = now() from input i
    where t.token_hash = i.token_hash and t.use_time is null and t.expire_time > now()
    returning t.session_id, i.*),
  live as (
    update session s set last_active_time = now(), idle_expire_time = least(now() + make_interval(secs => $6), s.expire_time)
    from used u
    where s.id = u.session_id and s.revoke_time is null and s.idle_expire_time > now() and s.expire_time > now()
      and ${userSql.enabled("s.user_id")}
    returning s.id, s.user_id, s.device_id, s.sign_in_method, s.expire_time, s.aal, s.mfa_time, u.successor_hash, u.ip_address, u.user_agent, u.request_id, u.position),
  successor as (
    insert into refresh_token (token_hash, session_id, expire_time) select successor_hash, id, expire_time from live),
  audited as (
    ${insertAuditEvents(["event", "outcome", "user_id", "session_id", "ip_address", "user_agent", "request_id"])}
    select 'token.refresh', 'success', user_id, id, ip_address, user_agent, request_id from live)
  select live.position, live.id, live.user_id, live.device_id, live.sign_in_method, live.expire_time, live.aal, live.mfa_time,
         u.kyc_level, u.kyc_status, u.permissions, u.email_verify_time is not null as email_verified, ${enrolled("live.user_id")} as mfa_enrolled
  from live ${userSql.join("u", "live.user_id")}`;

const usedTokenSql = (enrolled: SecondFactorSql) => `
  select s.id, s.user_id, s.device_id, s.sign_in_method, s.expire_time, s.aal, s.mfa_time, u.kyc_level, u.kyc_status, u.permissions,
         u.email_verify_time is not null as email_verified, ${enrolled("s.user_id")} as mfa_enrolled,
         rt.use_time is not null as used,
         rt.use_time > now() - make_interval(secs => $1)
           and exists (select 1 from refresh_token next where next.token_hash = $3 and next.use_time is null) as retry,
         s.revoke_time is not null as revoked,
         s.revoke_time is null and s.idle_expire_time > now() and s.expire_time > now() and u.disable_time is null as session_live
  from refresh_token rt join session s on s.id = rt.session_id ${userSql.join("u", "s.user_id")}
  where rt.token_hash = $2`;

/**
 * The refresh statements, written once per `enrolled` fragment (one per
 * process): refresh is a hot path, and Database keys its statements by text.
 */
const refreshStatements = new WeakMap<SecondFactorSql, { rotate: string; usedToken: string }>();
function refreshSql(enrolled: SecondFactorSql): { rotate: string; usedToken: string } {
  let statements = refreshStatements.get(enrolled);
  if (!statements) refreshStatements.set(enrolled, (statements = { rotate: rotateSql(enrolled), usedToken: usedTokenSql(enrolled) }));
  return statements;
}

/**
 * The session and refresh_token tables: device sessions and the refresh
 * tokens (as hashes) bound to them. Every statement on them is here.
 */
export const sessionStore = {
  /** Sessions revoked to keep each user within `maxPerUser`, by user. */
  async create(tx: Sql, sessions: SessionInsert[], times: { idleExpireTime: Date; expireTime: Date; maxPerUser: number }) {
    const column = <T>(value: (session: SessionInsert) => T) => sessions.map(value);
    return tx.query<{ id: string; user_id: string }>(createSql, [
      column((s) => s.id),
      column((s) => s.userId),
      column((s) => s.deviceId),
      column((s) => s.deviceType),
      column((s) => s.deviceName),
      column((s) => s.origin.clientIp),
      column((s) => s.origin.userAgent),
      column((s) => s.signInMethod),
      column((s) => s.tokenHash),
      column((s) => s.event),
      column((s) => s.origin.requestId),
      column((s) => JSON.stringify(s.detail)),
      times.idleExpireTime,
      times.expireTime,
      times.maxPerUser,
      column((s) => s.aal),
      column((s) => s.mfaTime),
    ]);
  },

  /** Revokes live sessions; returns their ids. */
  async revoke(tx: Sql, which: { sessionIds: string[] } | { userId: string; except?: string }, reason: string): Promise<string[]> {
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
  },

  async find(sql: Sql, id: string, userId: string): Promise<SessionRow | undefined> {
    const [row] = await sql.query<SessionRow>(`select ${sessionColumns} from session where id = $1 and user_id = $2`, [id, userId]);
    return row;
  },

  /** A user's live sessions, newest first, from after (time, id) on. */
  listLive(sql: Sql, userId: string, after: [Date, string] | undefined, limit: number): Promise<SessionRow[]> {
    return sql.query<SessionRow>(
      `select ${sessionColumns} from session
       where user_id = $1 and ${liveSession} and ($2::timestamptz is null or (create_time, id) < ($2, $3::uuid))
       order by create_time desc, id desc limit $4`,
      [userId, after?.[0] ?? null, after?.[1] ?? null, limit],
    );
  },

  /** How many live sessions each user has; users with none are left out. */
  async liveCounts(sql: Sql, userIds: string[]): Promise<Map<string, number>> {
    const rows = await sql.query<{ user_id: string; sessions: number }>(
      `select user_id, count(*)::int as sessions from session where user_id = any($1::uuid[]) and ${liveSession} group by user_id`,
      [userIds],
    );
    return new Map(rows.map((row) => [row.user_id, row.sessions]));
  },

  /** The device name of each session still kept (live, or ended lately); sessions purged are left out. */
  async deviceNames(sql: Sql, ids: string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const rows = await sql.query<{ id: string; device_name: string }>("select id, device_name from session where id = any($1::uuid[])", [ids]);
    return new Map(rows.map((row) => [row.id, row.device_name]));
  },

  async ownerOf(sql: Sql, id: string): Promise<string | undefined> {
    const [row] = await sql.query<{ user_id: string }>("select user_id from session where id = $1", [id]);
    return row?.user_id;
  },

  /**
   * Raises a live session of an enabled account to aal 2 as of now (a second
   * factor was just proved on it); the session and its user as the new access
   * token describes them, or undefined when the session has ended.
   */
  async stepUp(sql: Sql, id: string, userId: string): Promise<SteppedUpSession | undefined> {
    const [row] = await sql.query<SteppedUpSession>(
      `with stepped as (
         update session set aal = 2, mfa_time = now()
         where id = $1 and user_id = $2 and ${liveSession} and ${userSql.enabled("user_id")}
         returning id, user_id, device_id, sign_in_method, expire_time, mfa_time)
       select stepped.*, u.kyc_level, u.kyc_status, u.permissions, u.email_verify_time is not null as email_verified
       from stepped ${userSql.join("u", "stepped.user_id")}`,
      [id, userId],
    );
    return row;
  },

  /** Uses up each token (see rotateSql); the session for each input that did, undefined for the others. */
  async rotate(sql: Sql, rotations: RotationInput[], idleTimeoutSeconds: number, enrolled: SecondFactorSql): Promise<(RefreshedSession | undefined)[]> {
    const rows = await sql.query<RefreshedSession & { position: string }>(refreshSql(enrolled).rotate, [
      rotations.map((rotation) => rotation.tokenHash),
      rotations.map((rotation) => rotation.successorHash),
      rotations.map((rotation) => rotation.origin.clientIp),
      rotations.map((rotation) => rotation.origin.userAgent),
      rotations.map((rotation) => rotation.origin.requestId),
      idleTimeoutSeconds,
    ]);
    const rotated: (RefreshedSession | undefined)[] = new Array(rotations.length).fill(undefined);
    for (const row of rows) rotated[Number(row.position) - 1] = row;
    return rotated;
  },

  /**
   * A refresh token that could not be used: whether it was used already, and
   * within `reuseIntervalSeconds` with its successor still unused (a retry);
   * whether its session was revoked, or is still live.
   */
  async usedToken(sql: Sql, tokenHash: Buffer, successorHash: Buffer, reuseIntervalSeconds: number, enrolled: SecondFactorSql) {
    const [row] = await sql.query<RefreshedSession & { used: boolean; retry: boolean; session_live: boolean; revoked: boolean }>(
      refreshSql(enrolled).usedToken,
      [reuseIntervalSeconds, tokenHash, successorHash],
    );
    return row;
  },

  /** Moves last activity (and so the idle expiry) of live sessions forward. */
  async recordActivity(sql: Sql, ids: string[], idleTimeoutSeconds: number): Promise<void> {
    await sql.query(
      `update session set last_active_time = now(), idle_expire_time = least(now() + make_interval(secs => $1), expire_time)
       where id = any($2::uuid[]) and revoke_time is null and idle_expire_time > now()`,
      [idleTimeoutSeconds, ids],
    );
  },

  /** Sessions revoked in the last `windowSeconds`, by Postgres's clock. */
  recentRevocations(sql: Sql, windowSeconds: number): Promise<{ id: string; revoke_time: Date }[]> {
    return sql.query("select id, revoke_time from session where revoke_time > now() - make_interval(secs => $1)", [windowSeconds]);
  },

  /** Ended sessions (their refresh tokens go with them); revoked ones are kept `revokedRetentionSeconds` for catching up. */
  purgeEnded(db: Database, revokedRetentionSeconds: number): Promise<number> {
    return db.deleteInPages(
      "session",
      "id",
      "expire_time < now() or idle_expire_time < now() - make_interval(secs => $1) or revoke_time < now() - make_interval(secs => $1)",
      [revokedRetentionSeconds],
    );
  },

  purgeExpiredRefreshTokens(db: Database): Promise<number> {
    return db.deleteInPages("refresh_token", "token_hash", "expire_time < now()");
  },
};
