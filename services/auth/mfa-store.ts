import type { Database, Sql } from "../platform/database.js";

/** A user's TOTP factor: the secret sealed, and the last time step accepted. */
export interface TotpFactorRow {
  secret_sealed: string;
  confirmed: boolean;
  /** A TOTP step is a 30-second window since the epoch; bigint comes back as a string. */
  last_used_step: string;
}

/**
 * The factor under its row lock, the user's wrong second factors within the
 * window (with when the oldest leaves it), and how long a lockout for a spent
 * budget still holds (0 when none does).
 */
export interface LockedFactor extends TotpFactorRow {
  failures: number;
  retry_after_ms: number;
  locked_ms: number;
}

/** The longest lockout, however often the budget was spent. */
const maxLockoutSeconds = 24 * 3600;

const recentFailures = (windowSeconds: number) =>
  `from mfa_failure where user_id = $1 and fail_time > now() - make_interval(secs => ${Math.floor(windowSeconds)})`;

/**
 * The tables totp_factor, recovery_code and mfa_failure: a user's second
 * factors and the wrong ones they gave. Checking a factor locks the user's
 * totp_factor row first, so every later statement of that transaction reads
 * the failures and the last step committed by any other check of the same
 * user (on any instance): the budget and the replay refusal cannot be raced.
 */
export const mfaStore = {
  /** Puts a new unconfirmed secret in place of an unconfirmed one; false (nothing changed) when a confirmed factor exists. */
  async replaceUnconfirmed(tx: Sql, userId: string, secretSealed: string): Promise<boolean> {
    const rows = await tx.query(
      `insert into totp_factor (user_id, secret_sealed) values ($1, $2)
       on conflict (user_id) do update set secret_sealed = excluded.secret_sealed, create_time = now(), last_used_step = 0
         where totp_factor.confirm_time is null
       returning 1`,
      [userId, secretSealed],
    );
    return rows.length === 1;
  },

  /**
   * The user's factor (confirmed or not) under its row lock, with the failure
   * count; undefined when there is none. The count is a statement of its own:
   * one run with the lock would read the failures as they were before it
   * waited for the lock, missing those of the check it waited for.
   */
  async lock(tx: Sql, userId: string, windowSeconds: number): Promise<LockedFactor | undefined> {
    const [factor] = await tx.query<TotpFactorRow>(
      "select secret_sealed, confirm_time is not null as confirmed, last_used_step::text from totp_factor where user_id = $1 for update",
      [userId],
    );
    if (!factor) return undefined;
    const [failures] = await tx.query<{ failures: number; retry_after_ms: number; locked_ms: number }>(
      `select count(*)::int as failures,
              ceil(coalesce(extract(epoch from min(fail_time) + make_interval(secs => ${Math.floor(windowSeconds)}) - now()) * 1000, 0))::int as retry_after_ms,
              (select ceil(coalesce(extract(epoch from max(until_time) - now()) * 1000, 0))::int
                 from mfa_lockout where user_id = $1 and until_time > now()) as locked_ms
       ${recentFailures(windowSeconds)}`,
      [userId],
    );
    return { ...factor, ...failures! };
  },

  /** Records a wrong second factor, unless the budget is already spent; false when it was. */
  async recordFailure(tx: Sql, userId: string, budget: number, windowSeconds: number): Promise<boolean> {
    const rows = await tx.query(
      `insert into mfa_failure (user_id) select $1 where (select count(*) ${recentFailures(windowSeconds)}) < $2 returning 1`,
      [userId, budget],
    );
    return rows.length === 1;
  },

  /**
   * Locks the user's second factors out after they spent the budget: for the
   * failure window, doubled for each lockout in the last day, at most a day.
   * Returns the lockout's length in seconds.
   */
  async lockOut(tx: Sql, userId: string, windowSeconds: number): Promise<number> {
    const [row] = await tx.query<{ lock_seconds: number }>(
      `insert into mfa_lockout (user_id, until_time)
       select $1, now() + make_interval(secs => s.lock_seconds)
       from (select least($2 * power(2, count(*)), $3)::int as lock_seconds
             from mfa_lockout where user_id = $1 and lock_time > now() - interval '1 day') s
       returning extract(epoch from until_time - lock_time)::int as lock_seconds`,
      [userId, Math.floor(windowSeconds), maxLockoutSeconds],
    );
    return row!.lock_seconds;
  },

  /** Accepts a TOTP step once: false when that step (or a later one) was already used. */
  async useStep(tx: Sql, userId: string, step: number): Promise<boolean> {
    const rows = await tx.query("update totp_factor set last_used_step = $2 where user_id = $1 and last_used_step < $2 returning 1", [userId, step]);
    return rows.length === 1;
  },

  /** Activates the factor at the step its first code was in; returns when, by Postgres's clock. */
  async confirm(tx: Sql, userId: string, step: number): Promise<Date> {
    const [row] = await tx.query<{ confirm_time: Date }>(
      "update totp_factor set confirm_time = now(), last_used_step = $2 where user_id = $1 and confirm_time is null returning confirm_time",
      [userId, step],
    );
    return row!.confirm_time;
  },

  /** Factors confirmed in the last `windowSeconds`, by Postgres's clock: for the revocation feed. */
  recentConfirmations(sql: Sql, windowSeconds: number): Promise<{ user_id: string; confirm_time: Date }[]> {
    return sql.query<{ user_id: string; confirm_time: Date }>("select user_id, confirm_time from totp_factor where confirm_time > now() - make_interval(secs => $1)", [windowSeconds]);
  },

  /** Uses up one unused recovery code; undefined when it is not one, or was used; else how many stay unused. */
  async useRecoveryCode(tx: Sql, userId: string, codeHash: Buffer): Promise<number | undefined> {
    const [row] = await tx.query<{ remaining: number }>(
      `with used as (
         update recovery_code set use_time = now() where user_id = $1 and code_hash = $2 and use_time is null returning code_hash)
       select (select count(*)::int from recovery_code where user_id = $1 and use_time is null) - 1 as remaining from used`,
      [userId, codeHash],
    );
    return row?.remaining;
  },

  /** Replaces every recovery code of the user by `codeHashes`. */
  async replaceRecoveryCodes(tx: Sql, userId: string, codeHashes: Buffer[]): Promise<void> {
    await tx.query("delete from recovery_code where user_id = $1", [userId]);
    await tx.query("insert into recovery_code (user_id, code_hash) select $1, unnest($2::bytea[])", [userId, codeHashes]);
  },

  /** Removes the factor and its recovery codes; false when there was no confirmed factor. */
  async remove(tx: Sql, userId: string): Promise<boolean> {
    const rows = await tx.query("delete from totp_factor where user_id = $1 and confirm_time is not null returning 1", [userId]);
    await tx.query("delete from recovery_code where user_id = $1", [userId]);
    return rows.length === 1;
  },

  purgeOldFailures(db: Database, windowSeconds: number): Promise<number> {
    return db.deleteInPages("mfa_failure", "ctid", `fail_time <= now() - make_interval(secs => ${Math.floor(windowSeconds)})`);
  },

  /** Lockouts that neither hold nor count toward the next one's length. */
  purgeOldLockouts(db: Database): Promise<number> {
    return db.deleteInPages("mfa_lockout", "ctid", "lock_time <= now() - interval '1 day' and until_time <= now()");
  },
};

/** For statements that must know of a second factor in their own round trip (sign-in codes, a right password; refresh rotation and a passkey sign-in, through app.ts). */
export const totpSql = {
  /** True when the account `userIdExpression` names has confirmed TOTP: one lookup in totp_factor's primary key. */
  enrolled: (userIdExpression: string) => `exists (select 1 from totp_factor where user_id = ${userIdExpression} and confirm_time is not null)`,
};
