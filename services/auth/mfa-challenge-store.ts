import type { Database, Sql } from "../platform/database.js";

/** A sign-in's first factor, waiting for its second, as `open` takes it. */
export interface ChallengeInsert {
  id: string;
  userId: string;
  /** The first factor, as the sign-in's audit rows name it ("pwd", "otp"). */
  method: string;
  deviceId: string;
  deviceType: string;
  deviceName: string;
  clientIp: string;
  maxAttempts: number;
  expireTime: Date;
}

/** An open challenge whose attempt was just counted. */
export interface AttemptedChallenge {
  user_id: string;
  method: string;
  device_id: string;
  device_type: string;
  device_name: string;
  attempts: number;
  max_attempts: number;
}

/** Why a challenge took no attempt, for the audit log only: the caller hears one answer for all. */
export type DeadChallenge = "unknown" | "used" | "expired" | "out_of_attempts" | "other_ip";

/**
 * The mfa_challenge table: sign-ins that passed their first factor and wait
 * for the second, bound to the first factor's device and client IP.
 */
export const mfaChallengeStore = {
  async open(tx: Sql, challenge: ChallengeInsert): Promise<void> {
    await tx.query(
      `insert into mfa_challenge (id, user_id, method, device_id, device_type, device_name, client_ip, max_attempts, expire_time)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [
        challenge.id,
        challenge.userId,
        challenge.method,
        challenge.deviceId,
        challenge.deviceType,
        challenge.deviceName,
        challenge.clientIp,
        challenge.maxAttempts,
        challenge.expireTime,
      ],
    );
  },

  /**
   * Counts one attempt on a challenge that is open, unexpired, has attempts
   * left and was opened from `clientIp`, taking its row lock until the
   * caller's transaction ends, so parallel attempts wait for it and cannot
   * exceed the limit; undefined when it took none.
   */
  async attempt(sql: Sql, id: string, clientIp: string): Promise<AttemptedChallenge | undefined> {
    const [row] = await sql.query<AttemptedChallenge>(
      `update mfa_challenge set attempts = attempts + 1
       where id = $1 and close_time is null and expire_time > now() and attempts < max_attempts and client_ip = $2
       returning user_id, method, device_id, device_type, device_name, attempts, max_attempts`,
      [id, clientIp],
    );
    return row;
  },

  /** Why `attempt` took none; with the user, when the challenge exists. */
  async deadReason(sql: Sql, id: string, clientIp: string): Promise<{ reason: DeadChallenge; userId?: string }> {
    const [row] = await sql.query<{ user_id: string; reason: DeadChallenge }>(
      `select user_id, case when close_time is not null and attempts < max_attempts then 'used'
                            when attempts >= max_attempts then 'out_of_attempts'
                            when expire_time <= now() then 'expired'
                            when client_ip <> $2 then 'other_ip'
                            else 'used' end as reason
       from mfa_challenge where id = $1`,
      [id, clientIp],
    );
    return row ? { reason: row.reason, userId: row.user_id } : { reason: "unknown" };
  },

  /** Closes an open challenge: true for the one call that did (a sign-in completes once). */
  async close(sql: Sql, id: string): Promise<boolean> {
    const rows = await sql.query("update mfa_challenge set close_time = now() where id = $1 and close_time is null returning 1", [id]);
    return rows.length === 1;
  },

  purgeEnded(db: Database): Promise<number> {
    return db.deleteInPages("mfa_challenge", "id", "close_time is not null or expire_time < now()");
  },
};
