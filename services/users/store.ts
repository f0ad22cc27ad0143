import type { CallOrigin } from "../kernel/call.js";
import { pageTimeSql } from "../kernel/pagination.js";
import { insertAuditEvents } from "../audit/store.js";
import type { Database, Sql } from "../platform/database.js";
import type { UserRow } from "./user.js";

/** The columns of app_user a sign-in needs. */
const userColumns = "id, phone_number, email, display_name, kyc_level, kyc_status, permissions, disable_time, create_time, email_verify_time";

/** A user with what a password sign-in checks. */
export interface CredentialRow extends UserRow {
  password_hash: string | null;
  locked: boolean;
}

export interface LockoutPolicy {
  /** Consecutive wrong passwords from one source that lock the account for that source. */
  threshold: number;
  /** Consecutive wrong passwords from every source together that lock the account everywhere. */
  accountThreshold: number;
  /** The first lock; each later one doubles, up to maxSeconds. */
  baseSeconds: number;
  maxSeconds: number;
}

/** A password lock: for one source (an IP address or IPv6 prefix), or for the whole account. */
export type LockScope = "source" | "account";

/** Locked everywhere, or for the source in parameter `$2`. */
const credentialColumns = `${userColumns}, password_hash,
  coalesce(locked_until > now(), false)
  or exists (select 1 from password_failure f where f.user_id = app_user.id and f.source = $2 and f.locked_until > now()) as locked`;

/** When a lock taken after `lockouts` earlier ones ends: base × 2^lockouts, never past the maximum. */
const lockEnd = (lockouts: string, base: string, max: string) =>
  `now() + make_interval(secs => least(${max}, ${base} * power(2, least(${lockouts}, 30))))`;

/** A source with no wrong password for this long starts afresh. */
const sourceMemorySeconds = 24 * 60 * 60;

/** A user as operators see it: with the password lockouts in force. */
export interface ManagedUserRow extends UserRow {
  /** Locked for every source. */
  locked: boolean;
  /** The end of the account-wide lock, while it lasts. */
  locked_until: Date | null;
  locked_source_count: number;
  failed_logins: number;
}

const sourceLocked = "select 1 from password_failure f where f.user_id = app_user.id and f.locked_until > now()";
const managedColumns = `${userColumns}, coalesce(locked_until > now(), false) as locked,
  case when locked_until > now() then locked_until end as locked_until,
  (select count(*)::int from password_failure f where f.user_id = app_user.id and f.locked_until > now()) as locked_source_count,
  failed_logins`;

/** Which accounts an operator lists; every filter given must hold. */
export interface UserFilter {
  /** Lower case, as emails are stored. */
  emailPrefix?: string;
  phonePrefix?: string;
  /** active: enabled; locked: enabled with a password lockout in force, account-wide or for a source. */
  status?: "active" | "disabled" | "locked";
  kycLevel?: number;
}

/** `value` matched literally by LIKE, whatever it holds. */
const likeLiteral = (value: string) => value.replace(/[\\%_]/g, "\\$&");

/**
 * The app_user table: accounts, their credentials, KYC level and
 * permissions. Every statement on it is here; statements of other stores that
 * must read users in the same statement (batched sign-ins and refreshes) take
 * their fragment from `userSql`.
 */
export const userStore = {
  async find(sql: Sql, id: string): Promise<UserRow | undefined> {
    const [row] = await sql.query<UserRow>(`select ${userColumns} from app_user where id = $1`, [id]);
    return row;
  },

  /** By E.164 phone number or normalised email, for operators. */
  async findByPhoneOrEmail(sql: Sql, key: string): Promise<UserRow | undefined> {
    const [row] = await sql.query<UserRow>(`select ${userColumns} from app_user where phone_number = $1 or email = $1`, [key]);
    return row;
  },

  /** By normalised email. */
  async findByEmail(sql: Sql, email: string): Promise<UserRow | undefined> {
    const [row] = await sql.query<UserRow>(`select ${userColumns} from app_user where email = $1`, [email]);
    return row;
  },

  /** The new account, or undefined when the email is taken. */
  async createWithEmail(tx: Sql, user: { id: string; email: string; passwordHash: string; displayName: string }): Promise<UserRow | undefined> {
    const [row] = await tx.query<UserRow>(
      `insert into app_user (id, email, password_hash, display_name) values ($1, $2, $3, $4)
       on conflict (email) do nothing returning ${userColumns}`,
      [user.id, user.email, user.passwordHash, user.displayName],
    );
    return row;
  },

  /**
   * Removes an account whose address was never confirmed: a registration
   * taken back. False if the address was confirmed meanwhile. Its codes,
   * devices and failure counts go with it; its audit rows stay.
   */
  async deleteUnconfirmed(tx: Sql, id: string): Promise<boolean> {
    const rows = await tx.query("delete from app_user where id = $1 and email_verify_time is null returning id", [id]);
    return rows.length > 0;
  },

  /** `locked` is for a sign-in from `source` (see lockoutSource). */
  async credentialsByEmail(sql: Sql, email: string, source: string): Promise<CredentialRow | undefined> {
    const [row] = await sql.query<CredentialRow>(`select ${credentialColumns} from app_user where email = $1`, [email, source]);
    return row;
  },

  async credentialsById(sql: Sql, id: string, source: string): Promise<CredentialRow | undefined> {
    const [row] = await sql.query<CredentialRow>(`select ${credentialColumns} from app_user where id = $1`, [id, source]);
    return row;
  },

  /**
   * A right password: clears the failure counts of the account and of this
   * source (other sources stay locked) and takes the user's row lock (which
   * session creation relies on). `disabled` if the account was disabled
   * meanwhile; `mfa_enrolled` if it has a second factor, by the fragment of
   * that table's owner (`enrolled`: auth's totpSql.enrolled), in the same round trip.
   */
  async passwordAccepted(
    tx: Sql,
    id: string,
    source: string,
    enrolled: (userIdExpression: string) => string,
  ): Promise<{ disabled: boolean; mfa_enrolled: boolean }> {
    const [state] = await tx.query<{ disabled: boolean; mfa_enrolled: boolean }>(
      `with forgotten as (delete from password_failure where user_id = $1 and source = $2)
       update app_user set failed_logins = 0, lockouts = 0 where id = $1
       returning disable_time is not null as disabled, ${enrolled("app_user.id")} as mfa_enrolled`,
      [id, source],
    );
    return state!;
  },

  /**
   * Counts a wrong password from `source` and audits it. The threshold-th
   * consecutive one from that source locks the account for that source only,
   * so someone else's guessing does not lock the owner out; the account
   * threshold-th from all sources together locks it everywhere. Each lock
   * lasts base × 2^(earlier lockouts of its kind), at most the maximum. One
   * statement, as an unknown email's one audit insert: the two answers take
   * the same time. Returns the locks it began: none, or the source's, the
   * account's, or both.
   */
  async passwordRejected(sql: Sql, id: string, source: string, policy: LockoutPolicy, origin: CallOrigin): Promise<LockScope[]> {
    const audited = insertAuditEvents(["event", "outcome", "user_id", "ip_address", "user_agent", "request_id", "detail"]);
    const rows = await sql.query<{ event: string; scope: LockScope | null }>(
      `with from_source as (
         insert into password_failure as f (user_id, source, failures, lockouts, locked_until)
         values ($3, $7, case when $1 <= 1 then 0 else 1 end, case when $1 <= 1 then 1 else 0 end, case when $1 <= 1 then ${lockEnd("0", "$8", "$9")} end)
         on conflict (user_id, source) do update set
           failures = case when f.failures + 1 >= $1 then 0 else f.failures + 1 end,
           lockouts = case when f.failures + 1 >= $1 then f.lockouts + 1 else f.lockouts end,
           locked_until = case when f.failures + 1 >= $1 then ${lockEnd("f.lockouts", "$8", "$9")} else f.locked_until end,
           fail_time = now()
         returning failures, lockouts, locked_until),
       account as (
         update app_user set
           failed_logins = case when failed_logins + 1 >= $2 then 0 else failed_logins + 1 end,
           lockouts = case when failed_logins + 1 >= $2 then lockouts + 1 else lockouts end,
           locked_until = case when failed_logins + 1 >= $2 then ${lockEnd("lockouts", "$8", "$9")} else locked_until end
         where id = $3 returning id, failed_logins, lockouts, locked_until)
       ${audited}
       select 'sign_in', 'failure', id, $4, $5, $6, '{"method": "pwd", "reason": "wrong_password"}' from account
       union all
       select 'account.locked', 'denied', account.id, $4, $5, $6,
         jsonb_build_object('scope', 'source', 'lockouts', from_source.lockouts, 'until', from_source.locked_until)
       from account, from_source where from_source.failures = 0
       union all
       select 'account.locked', 'denied', id, $4, $5, $6, jsonb_build_object('scope', 'account', 'lockouts', lockouts, 'until', locked_until)
       from account where failed_logins = 0
       returning event, detail->>'scope' as scope`,
      [policy.threshold, policy.accountThreshold, id, origin.clientIp, origin.userAgent, origin.requestId, source, policy.baseSeconds, policy.maxSeconds],
    );
    return rows.flatMap((row) => (row.event === "account.locked" && row.scope ? [row.scope] : []));
  },

  /** Failure counts of sources quiet for a day, whose lock has ended. */
  purgeQuietFailureSources(db: Database): Promise<number> {
    return db.deleteInPages(
      "password_failure",
      "ctid",
      "fail_time < now() - make_interval(secs => $1) and (locked_until is null or locked_until < now())",
      [sourceMemorySeconds],
    );
  },

  /**
   * A new password restarts the account-wide count of wrong passwords
   * (failed_logins): guesses at the old one no longer bring the next account
   * lock closer. A lock in force, earlier lockouts and per-source counts stay.
   */
  async setPassword(tx: Sql, id: string, passwordHash: string): Promise<void> {
    await tx.query("update app_user set password_hash = $1, failed_logins = 0, update_time = now() where id = $2", [passwordHash, id]);
  },

  /**
   * Ends every password lock on the account, for every source and account-wide,
   * and forgets the counts and earlier lockouts that would make the next lock
   * longer. True if a lock was in force.
   */
  async clearLockouts(tx: Sql, id: string): Promise<boolean> {
    const [row] = await tx.query<{ was_locked: boolean }>(
      `with forgotten as (delete from password_failure where user_id = $1 returning locked_until > now() as locked),
       account as (select locked_until > now() as locked from app_user where id = $1),
       cleared as (update app_user set failed_logins = 0, lockouts = 0, locked_until = null where id = $1)
       select exists (select 1 from account where locked) or exists (select 1 from forgotten where locked) as was_locked`,
      [id],
    );
    return row!.was_locked;
  },

  /** The address is the user's: proven by a code or link mailed to it. True if it was not confirmed before. */
  async confirmEmail(tx: Sql, id: string): Promise<boolean> {
    const rows = await tx.query("update app_user set email_verify_time = now() where id = $1 and email_verify_time is null returning 1", [id]);
    return rows.length === 1;
  },

  async setDisplayName(sql: Sql, id: string, displayName: string): Promise<void> {
    await sql.query("update app_user set display_name = $1, update_time = now() where id = $2", [displayName, id]);
  },

  /** The user, row-locked until the transaction ends (changes of address queue on it); undefined for no such user. */
  async lock(tx: Sql, id: string): Promise<UserRow | undefined> {
    const [row] = await tx.query<UserRow>(`select ${userColumns} from app_user where id = $1 for update`, [id]);
    return row;
  },

  /**
   * An address proven the user's (by a code or link mailed to it) becomes
   * their confirmed email, replacing the one they had; returns that one (null
   * for none), or undefined for no such user. Another account's address fails
   * with a unique violation (23505).
   */
  async setConfirmedEmail(tx: Sql, id: string, email: string): Promise<{ previous: string | null } | undefined> {
    const [row] = await tx.query<{ previous: string | null }>(
      `update app_user u set email = $2, email_verify_time = now(), update_time = now()
       from (select id, email from app_user where id = $1 for update) before
       where u.id = before.id returning before.email as previous`,
      [id, email],
    );
    return row;
  },

  /** As setConfirmedEmail, for a phone number proven by a texted code; returns the user as they are now. */
  async setConfirmedPhone(tx: Sql, id: string, phone: string): Promise<UserRow | undefined> {
    const [row] = await tx.query<UserRow>(
      `update app_user set phone_number = $2, phone_verify_time = now(), update_time = now() where id = $1 returning ${userColumns}`,
      [id, phone],
    );
    return row;
  },

  /** The user's KYC level, row-locked until the transaction ends; undefined for no such user. */
  async lockKyc(tx: Sql, id: string): Promise<{ kyc_level: number } | undefined> {
    const [row] = await tx.query<{ kyc_level: number }>("select kyc_level from app_user where id = $1 for update", [id]);
    return row;
  },

  async markKycPending(tx: Sql, id: string): Promise<void> {
    await tx.query("update app_user set kyc_status = 'PENDING', update_time = now() where id = $1", [id]);
  },

  /** A reviewer's decision: an approval raises the level to `level` (never lowers it); returns the level now. */
  async recordKycDecision(tx: Sql, id: string, decision: { approved: boolean; level: number }): Promise<number> {
    const [row] = await tx.query<{ kyc_level: number }>(
      "update app_user set kyc_level = greatest(kyc_level, $1), kyc_status = $2, update_time = now() where id = $3 returning kyc_level",
      [decision.approved ? decision.level : 0, decision.approved ? "APPROVED" : "REJECTED", id],
    );
    return row!.kyc_level;
  },

  /** Lowers the level; returns when, by Postgres's clock (tokens issued before then are capped). */
  async lowerKyc(tx: Sql, id: string, level: number): Promise<Date> {
    const [row] = await tx.query<{ kyc_lower_time: Date }>(
      "update app_user set kyc_level = $1, kyc_status = 'NONE', kyc_lower_time = now(), update_time = now() where id = $2 returning kyc_lower_time",
      [level, id],
    );
    return row!.kyc_lower_time;
  },

  /**
   * Users whose KYC level or permissions were lowered in the last
   * `windowSeconds`, by Postgres's clock, in one read for the feed's poll:
   * each lowering's time, null when that one is older, with the level and
   * permissions the user has now.
   */
  recentLowerings(
    sql: Sql,
    windowSeconds: number,
  ): Promise<{ id: string; kyc_level: number; kyc_lower_time: Date | null; permissions: string[]; permissions_lower_time: Date | null }[]> {
    return sql.query(
      `select id, kyc_level, permissions,
              case when kyc_lower_time > now() - make_interval(secs => $1) then kyc_lower_time end as kyc_lower_time,
              case when permissions_lower_time > now() - make_interval(secs => $1) then permissions_lower_time end as permissions_lower_time
       from app_user
       where kyc_lower_time > now() - make_interval(secs => $1) or permissions_lower_time > now() - make_interval(secs => $1)`,
      [windowSeconds],
    );
  },

  /** The user's permissions now; undefined for no such user. */
  async grantPermission(tx: Sql, id: string, permission: string): Promise<string[] | undefined> {
    const [row] = await tx.query<{ permissions: string[] }>(
      "update app_user set permissions = array_append(array_remove(permissions, $1), $1), update_time = now() where id = $2 returning permissions",
      [permission, id],
    );
    return row?.permissions;
  },

  /**
   * The user's permissions now, and when they were lowered by Postgres's
   * clock (tokens issued before then keep only these); undefined for no such user.
   */
  async revokePermission(tx: Sql, id: string, permission: string): Promise<{ permissions: string[]; lowerTime: Date } | undefined> {
    const [row] = await tx.query<{ permissions: string[]; permissions_lower_time: Date }>(
      `update app_user set permissions = array_remove(permissions, $1), permissions_lower_time = now(), update_time = now()
       where id = $2 returning permissions, permissions_lower_time`,
      [permission, id],
    );
    return row && { permissions: row.permissions, lowerTime: row.permissions_lower_time };
  },

  /** False for no such user. Disabling a disabled account keeps when it was first disabled. */
  async setDisabled(tx: Sql, id: string, disabled: boolean): Promise<boolean> {
    const rows = await tx.query(
      "update app_user set disable_time = case when $1 then coalesce(disable_time, now()) end, update_time = now() where id = $2 returning id",
      [disabled, id],
    );
    return rows.length > 0;
  },

  async findManaged(sql: Sql, id: string): Promise<ManagedUserRow | undefined> {
    const [row] = await sql.query<ManagedUserRow>(`select ${managedColumns} from app_user where id = $1`, [id]);
    return row;
  },

  /** Newest first (create_time, id), from after `after` (a page_time and an id) on. */
  listManaged(sql: Sql, filter: UserFilter, after: [string, string] | undefined, limit: number): Promise<(ManagedUserRow & { page_time: string })[]> {
    const params: unknown[] = [];
    const param = (value: unknown) => `$${params.push(value)}`;
    // Only the filters given, so each combination is its own statement and its own plan.
    const conditions: string[] = [];
    if (filter.emailPrefix !== undefined) conditions.push(`email like ${param(likeLiteral(filter.emailPrefix) + "%")} escape '\\'`);
    if (filter.phonePrefix !== undefined) conditions.push(`phone_number like ${param(likeLiteral(filter.phonePrefix) + "%")} escape '\\'`);
    if (filter.status === "active") conditions.push("disable_time is null");
    if (filter.status === "disabled") conditions.push("disable_time is not null");
    if (filter.status === "locked") conditions.push(`disable_time is null and (locked_until > now() or exists (${sourceLocked}))`);
    if (filter.kycLevel !== undefined) conditions.push(`kyc_level = ${param(filter.kycLevel)}`);
    if (after) conditions.push(`(create_time, id) < (${param(after[0])}::timestamptz, ${param(after[1])}::uuid)`);
    return sql.query<ManagedUserRow & { page_time: string }>(
      `select ${managedColumns}, ${pageTimeSql("create_time")} as page_time
       from app_user ${conditions.length > 0 ? `where ${conditions.join(" and ")}` : ""}
       order by create_time desc, id desc limit ${param(limit)}`,
      params,
    );
  },
};

/** Fragments of app_user for statements that other stores batch. */
export const userSql = {
  /** True while the account `idExpression` names is enabled. */
  enabled: (idExpression: string) => `(select disable_time from app_user where id = ${idExpression}) is null`,

  /** The id of the account whose number is `phoneExpression`, or null: one lookup in the unique index on phone_number. */
  idByPhone: (phoneExpression: string) => `(select id from app_user where phone_number = ${phoneExpression})`,

  /** Joins the user `idExpression` names as `alias`, for its claims (kyc_level, kyc_status, permissions, email_verify_time) and disable_time. */
  join: (alias: string, idExpression: string) => `join app_user ${alias} on ${alias}.id = ${idExpression}`,

  /**
   * Phone sign-ins: the rows of `select` (id, phone_number, phone_verify_time;
   * in phone order, so batches lock alike) become users, or mark the existing
   * user's number verified; returns each user's row, row-locked, with
   * `inserted` for new accounts.
   */
  upsertPhoneUsers: (select: string) =>
    `insert into app_user (id, phone_number, phone_verify_time)
    ${select}
    on conflict (phone_number) do update set phone_verify_time = coalesce(app_user.phone_verify_time, now())
    returning ${userColumns}, (xmax = 0) as inserted`,
};
