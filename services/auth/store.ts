import { insertAuditEvents } from "../audit/store.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import { userSql } from "../users/store.js";
import type { UserRow } from "../users/user.js";
import { codeFailureSql } from "./code-failure-store.js";
import { totpSql } from "./mfa-store.js";

export interface FailureBudget {
  failures: number;
  /** Until the oldest failure in the window leaves it; null with none. */
  wait_ms: number | null;
}

/** A code submitted for a number, as one row of a batch of attempts. */
export interface AttemptInput {
  phone: string;
  codeMac: Buffer;
  /** The id a new account gets if the code is right and the number has none. */
  newUserId: string;
  clientIp: string;
  userAgent: string;
  requestId: string;
  maskedPhone: string;
}

export type AttemptRow = FailureBudget & { position: string; locks: boolean } & (
  | { attempts: null }
  | { attempts: number; matched: false }
  | ({ attempts: number; matched: true; inserted: boolean; mfa_enrolled: boolean } & UserRow)
);

/**
 * For each number of `input`: its wrong codes inside the window ($1 seconds),
 * at most the budget ($2), and when the oldest of them leaves the window.
 */
const budgetSql = `
  budget as (
    select i.phone, count(recent.fail_time)::int as failures,
           ceil(extract(epoch from min(recent.fail_time) + make_interval(secs => $1) - now()) * 1000)::int as wait_ms
    from input i left join lateral (
      select fail_time from otp_failure where phone_number = i.phone and fail_time > now() - make_interval(secs => $1)
      order by fail_time desc limit $2) recent on true
    group by i.phone)`;

/**
 * For each number ($3) with its submitted code's HMAC ($4): the failure budget
 * (window $1 seconds, budget $2), the attempt, counted under the open code's
 * row lock before anything else and closing the code when it is right or was
 * the last attempt; for a wrong code, the failure against the number's budget
 * and its audit rows (the caller's IP $6, user agent $7, request $8, masked
 * number $9), against the number's account if it has one, so that its owner's
 * history shows them; for the right code the user, found or created ($5) and
 * row-locked. The code is compared inside the counting statement: both sides
 * are HMACs under a server key, so the comparison's timing says nothing about
 * the code.
 */
const attemptSql = `
  with input as (
    select * from unnest($3::text[], $4::bytea[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[])
      with ordinality as i(phone, code_mac, new_user_id, ip_address, user_agent, request_id, masked_phone, position)),
  ${budgetSql},
  attempt as (
    update otp_challenge c set attempts = c.attempts + 1,
      close_time = case when c.code_mac = i.code_mac or c.attempts + 1 >= c.max_attempts then now() end
    from input i join budget b on b.phone = i.phone
    where c.phone_number = i.phone and c.close_time is null and c.expire_time > now() and c.attempts < c.max_attempts
      and b.failures < $2
    returning c.phone_number, c.attempts, c.code_mac = i.code_mac as matched),
  wrong as (
    select i.*, a.attempts, b.failures + 1 as failures, ${userSql.idByPhone("i.phone")} as user_id from input i
    join attempt a on a.phone_number = i.phone and not a.matched join budget b on b.phone = i.phone),
  failed as (
    insert into otp_failure (phone_number) select phone from wrong),
  failure_audited as (
    ${insertAuditEvents(["event", "outcome", "user_id", "ip_address", "user_agent", "request_id", "detail"])}
    select 'otp.verify', 'failure', user_id, ip_address, user_agent, request_id,
           jsonb_build_object('phone', masked_phone, 'attempt', attempts, 'failures_in_window', failures)
    from wrong
    union all
    select 'otp.phone_locked', 'denied', user_id, ip_address, user_agent, request_id, jsonb_build_object('phone', masked_phone)
    from wrong where failures = $2),
  signed_in as (
    ${userSql.upsertPhoneUsers("select i.new_user_id, i.phone, now() from input i join attempt a on a.phone_number = i.phone where a.matched order by i.phone")})
  select i.position, b.failures, b.wait_ms, a.attempts, a.matched, b.failures + 1 = $2 as locks, u.*, ${totpSql.enrolled("u.id")} as mfa_enrolled
  from input i join budget b on b.phone = i.phone
  left join attempt a on a.phone_number = i.phone left join signed_in u on u.phone_number = i.phone`;


/**
 * The otp_challenge and otp_failure tables: codes sent (as HMACs) with their
 * attempts, and wrong codes per number, which a new code does not reset.
 */
export const otpStore = {
  async failureBudget(sql: Sql, phone: string, settings: Config["otp"]): Promise<FailureBudget> {
    const [budget] = await sql.query<FailureBudget>(`with input as (select $3::text as phone), ${budgetSql} select failures, wait_ms from budget`, [
      settings.failureWindowSeconds,
      settings.failureBudget,
      phone,
    ]);
    return budget!;
  },

  /**
   * Row-locks the number's open code, which orders a send after any attempt
   * still running on it; how long until its resend cooldown ends (≤ 0: over).
   */
  async lockOpenCode(tx: Sql, phone: string, resendCooldownSeconds: number): Promise<{ wait_ms: number } | undefined> {
    const [open] = await tx.query<{ wait_ms: number }>(
      `select ceil(extract(epoch from create_time + make_interval(secs => $1) - now()) * 1000)::int as wait_ms
       from otp_challenge where phone_number = $2 and close_time is null for update`,
      [resendCooldownSeconds, phone],
    );
    return open;
  },

  /** Closes the number's open code and opens a new one. */
  async replaceCode(tx: Sql, code: { id: string; phone: string; codeMac: Buffer; maxAttempts: number; expireTime: Date }): Promise<void> {
    await tx.query("update otp_challenge set close_time = now() where phone_number = $1 and close_time is null", [code.phone]);
    await tx.query("insert into otp_challenge (id, phone_number, code_mac, max_attempts, expire_time) values ($1, $2, $3, $4, $5)", [
      code.id,
      code.phone,
      code.codeMac,
      code.maxAttempts,
      code.expireTime,
    ]);
  },

  async dropCode(sql: Sql, id: string): Promise<void> {
    await sql.query("delete from otp_challenge where id = $1", [id]);
  },

  /** Counts and checks a batch of attempts (see attemptSql); one row per input, by position. */
  checkAttempts(tx: Sql, attempts: AttemptInput[], settings: Config["otp"]): Promise<AttemptRow[]> {
    const column = <T>(value: (attempt: AttemptInput) => T) => attempts.map(value);
    return tx.query<AttemptRow>(attemptSql, [
      settings.failureWindowSeconds,
      settings.failureBudget,
      column((a) => a.phone),
      column((a) => a.codeMac),
      column((a) => a.newUserId),
      column((a) => a.clientIp),
      column((a) => a.userAgent),
      column((a) => a.requestId),
      column((a) => a.maskedPhone),
    ]);
  },

  purgeClosedCodes(db: Database): Promise<number> {
    return db.deleteInPages("otp_challenge", "id", "close_time is not null or expire_time < now()");
  },

  purgeOldFailures(db: Database, failureWindowSeconds: number): Promise<number> {
    return db.deleteInPages("otp_failure", "ctid", "fail_time < now() - make_interval(secs => $1)", [failureWindowSeconds]);
  },
};

/** A reset's code checked against the user's open reset: the attempt it was, and whether the code was right. */
export interface ResetCodeAttempt {
  id: string;
  attempts: number;
  matched: boolean;
}

/**
 * The password_reset table: mailed codes and link tokens (as HMACs), their
 * attempts, and when each was used or superseded. A user holds at most one
 * open reset: a new one closes the one before.
 */
export const passwordResetStore = {
  /**
   * Closes the user's open reset and opens `reset` in its place; returns the
   * id of the one it closed. The caller holds the user's row lock, so that
   * requests made together leave one open. The code allows maxAttempts tries,
   * or fewer if the user's budget of wrong codes has fewer left.
   */
  async replace(
    tx: Sql,
    reset: { id: string; userId: string; codeMac: Buffer; linkMac: Buffer; maxAttempts: number; failureBudget: number; expireTime: Date },
  ): Promise<string | undefined> {
    const [replaced] = await tx.query<{ id: string }>(
      "update password_reset set close_time = now() where user_id = $1 and close_time is null returning id",
      [reset.userId],
    );
    await tx.query(
      `insert into password_reset (id, user_id, code_mac, link_mac, max_attempts, expire_time)
       values ($1, $2, $3, $4, ${codeFailureSql.allowedAttempts("$5", "$7", "$2")}, $6)`,
      [reset.id, reset.userId, reset.codeMac, reset.linkMac, reset.maxAttempts, reset.expireTime, reset.failureBudget],
    );
    return replaced?.id;
  },

  /**
   * Takes back a reset whose mail was not sent: deletes it and, if it was
   * still open, reopens the one it replaced. The caller holds the user's row lock.
   */
  async withdraw(tx: Sql, id: string, replaced: string | undefined): Promise<void> {
    const [withdrawn] = await tx.query<{ open: boolean }>("delete from password_reset where id = $1 returning close_time is null as open", [id]);
    if (replaced && withdrawn?.open) await tx.query("update password_reset set close_time = null where id = $1", [replaced]);
  },

  /** The open, unexpired reset a link's token names. */
  async openByLink(sql: Sql, linkMac: Buffer): Promise<{ id: string; user_id: string } | undefined> {
    const [row] = await sql.query<{ id: string; user_id: string }>(
      "select id, user_id from password_reset where link_mac = $1 and close_time is null and expire_time > now()",
      [linkMac],
    );
    return row;
  },

  /**
   * Counts an attempt on the user's open reset if its code has tries left and
   * the user has wrong codes left in their budget ($3), comparing the code in
   * the same statement under the row's lock: no number of parallel guesses
   * gets past max_attempts. A wrong code is spent from the budget. A code that
   * runs out of tries stops working; its link does not, being unguessable. A
   * match leaves the reset open: `consume` closes it in the transaction that
   * uses it, so a failure before then leaves the code usable. Both sides of
   * the comparison are HMACs under a server key, so its timing says nothing
   * about the code. Undefined when no attempt was counted.
   */
  async attemptCode(sql: Sql, userId: string, codeMac: Buffer, failureBudget: number): Promise<ResetCodeAttempt | undefined> {
    const [attempt] = await sql.query<ResetCodeAttempt>(
      `with tried as (
         update password_reset set attempts = attempts + 1
         where user_id = $1 and close_time is null and expire_time > now() and attempts < max_attempts
           and ${codeFailureSql.recent("$1")} < $3
         returning id, attempts, code_mac = $2 as matched),
       failed as (${codeFailureSql.record("select $1::uuid from tried where not matched")})
       select * from tried`,
      [userId, codeMac, failureBudget],
    );
    return attempt;
  },

  /**
   * Uses the reset: closes it if it is still open, unexpired and its account
   * enabled. Of parallel uses exactly one gets the user's id back; the others
   * wait on the row lock and then find it closed.
   */
  async consume(tx: Sql, id: string): Promise<string | undefined> {
    const [row] = await tx.query<{ user_id: string }>(
      `update password_reset set close_time = now()
       where id = $1 and close_time is null and expire_time > now() and ${userSql.enabled("password_reset.user_id")}
       returning user_id`,
      [id],
    );
    return row?.user_id;
  },

  /** Closes every open reset of the user: once a password is reset, the other mails in the inbox stop working. */
  async closeOpen(tx: Sql, userId: string): Promise<void> {
    await tx.query("update password_reset set close_time = now() where user_id = $1 and close_time is null", [userId]);
  },

  purgeClosed(db: Database): Promise<number> {
    return db.deleteInPages("password_reset", "id", "close_time is not null or expire_time < now()");
  },
};
