import type { Database, Sql } from "../platform/database.js";

export type ContactChannel = "email" | "phone";

/** An open verification: whose, and which address (an email, or an E.164 number) it proves. */
export interface VerificationRow {
  id: string;
  user_id: string;
  address: string;
}

/** A code tried against an open verification: the attempt it was, and whether it was the right code. */
export interface CodeTry extends VerificationRow {
  attempts: number;
  max_attempts: number;
  matched: boolean;
}

/**
 * Counts a try ($1: the code's HMAC) on the open verifications `where`
 * selects, comparing the code in the same statement under the rows' locks, so
 * parallel guesses cannot exceed max_attempts; the right code or the last
 * attempt closes the row. Both sides are HMACs under a server key, so the
 * comparison's timing says nothing about the code.
 */
const tryCodeSql = (where: string) => `
  update contact_verification set attempts = attempts + 1,
    close_time = case when code_mac = $1 or attempts + 1 >= max_attempts then now() end
  where ${where} and close_time is null and expire_time > now() and attempts < max_attempts
  returning id, user_id, address, attempts, max_attempts, code_mac = $1 as matched`;

/**
 * The contact_verification table: codes (and for email, link tokens) that
 * prove an address belongs to a user, kept as HMACs, with their attempts. A
 * user has at most one open verification per channel.
 */
export const contactVerificationStore = {
  /** Closes the user's open verification on this channel and opens `verification` in its place. */
  async replace(
    tx: Sql,
    verification: { id: string; userId: string; channel: ContactChannel; address: string; codeMac: Buffer; linkMac: Buffer | null; maxAttempts: number; expireTime: Date },
  ): Promise<void> {
    await tx.query("update contact_verification set close_time = now() where user_id = $1 and channel = $2 and close_time is null", [
      verification.userId,
      verification.channel,
    ]);
    await tx.query(
      `insert into contact_verification (id, user_id, channel, address, code_mac, link_mac, max_attempts, expire_time)
       values ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [
        verification.id,
        verification.userId,
        verification.channel,
        verification.address,
        verification.codeMac,
        verification.linkMac,
        verification.maxAttempts,
        verification.expireTime,
      ],
    );
  },

  /** The user's open verification on a channel, and how long ago it was opened (by Postgres's clock). */
  async open(sql: Sql, userId: string, channel: ContactChannel): Promise<(VerificationRow & { age_ms: number }) | undefined> {
    const [row] = await sql.query<VerificationRow & { age_ms: number }>(
      `select id, user_id, address, (extract(epoch from now() - create_time) * 1000)::float8 as age_ms
       from contact_verification where user_id = $1 and channel = $2 and close_time is null`,
      [userId, channel],
    );
    return row;
  },

  /**
   * A code typed with an email address: one try on every open email
   * verification of the address (a registration and another account's
   * change of address may both be waiting on it).
   */
  tryEmailCode(tx: Sql, address: string, codeMac: Buffer): Promise<CodeTry[]> {
    return tx.query<CodeTry>(tryCodeSql("channel = 'email' and address = $2"), [codeMac, address]);
  },

  /** A code tried on one verification; undefined when it is no longer open. */
  async tryCode(tx: Sql, id: string, codeMac: Buffer): Promise<CodeTry | undefined> {
    const [row] = await tx.query<CodeTry>(tryCodeSql("id = $2"), [codeMac, id]);
    return row;
  },

  /** Uses up the open email verification a link's token names; undefined if there is none (any more). */
  async useLink(tx: Sql, linkMac: Buffer): Promise<VerificationRow | undefined> {
    const [row] = await tx.query<VerificationRow>(
      `update contact_verification set close_time = now()
       where link_mac = $1 and channel = 'email' and close_time is null and expire_time > now()
       returning id, user_id, address`,
      [linkMac],
    );
    return row;
  },

  async close(sql: Sql, id: string): Promise<void> {
    await sql.query("update contact_verification set close_time = now() where id = $1 and close_time is null", [id]);
  },

  purgeClosed(db: Database): Promise<number> {
    return db.deleteInPages("contact_verification", "id", "close_time is not null or expire_time < now()");
  },
};
