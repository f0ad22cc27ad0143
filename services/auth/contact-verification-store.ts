import type { Database, Sql } from "../platform/database.js";
import { codeFailureSql } from "./code-failure-store.js";

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
 * selects whose users have wrong codes left in their budget ($3), comparing
 * the code in the same statement under the rows' locks, so parallel guesses
 * cannot exceed max_attempts; the right code or the last attempt closes the
 * row, and a wrong one is spent from its user's budget. Both sides are HMACs
 * under a server key, so the comparison's timing says nothing about the code.
 */
const tryCodeSql = (where: string) => `
  with tried as (
    update contact_verification set attempts = attempts + 1,
      close_time = case when code_mac = $1 or attempts + 1 >= max_attempts then now() end
    where ${where} and close_time is null and expire_time > now() and attempts < max_attempts
      and ${codeFailureSql.recent("contact_verification.user_id")} < $3
    returning id, user_id, address, attempts, max_attempts, code_mac = $1 as matched),
  failed as (${codeFailureSql.record("select user_id from tried where not matched")})
  select * from tried`;

/**
 * The contact_verification table: codes (and for email, link tokens) that
 * prove an address belongs to a user, kept as HMACs, with their attempts. A
 * user has at most one open verification per channel.
 */
export const contactVerificationStore = {
  /**
   * Closes the user's open verification on this channel and opens
   * `verification` in its place; returns the id of the one it closed. The
   * code allows maxAttempts tries, or fewer if the user's budget of wrong
   * codes has fewer left.
   */
  async replace(
    tx: Sql,
    verification: {
      id: string;
      userId: string;
      channel: ContactChannel;
      address: string;
      codeMac: Buffer;
      linkMac: Buffer | null;
      maxAttempts: number;
      failureBudget: number;
      expireTime: Date;
    },
  ): Promise<string | undefined> {
    const [replaced] = await tx.query<{ id: string }>(
      "update contact_verification set close_time = now() where user_id = $1 and channel = $2 and close_time is null returning id",
      [verification.userId, verification.channel],
    );
    await tx.query(
      `insert into contact_verification (id, user_id, channel, address, code_mac, link_mac, max_attempts, expire_time)
       values ($1, $2, $3, $4, $5, $6, ${codeFailureSql.allowedAttempts("$7", "$9", "$2")}, $8)`,
      [
        verification.id,
        verification.userId,
        verification.channel,
        verification.address,
        verification.codeMac,
        verification.linkMac,
        verification.maxAttempts,
        verification.expireTime,
        verification.failureBudget,
      ],
    );
    return replaced?.id;
  },

  /**
   * Takes back a verification whose code never reached anyone: deletes it
   * and, if it was still open, reopens the one it replaced. One closed since
   * (replaced by another, used, or closed by a change of password) reopens
   * nothing. The caller holds the user's row lock, as every opening does.
   */
  async withdraw(tx: Sql, id: string, replaced: string | undefined): Promise<void> {
    const [withdrawn] = await tx.query<{ open: boolean }>("delete from contact_verification where id = $1 returning close_time is null as open", [id]);
    if (replaced && withdrawn?.open) await tx.query("update contact_verification set close_time = null where id = $1", [replaced]);
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
  tryEmailCode(tx: Sql, address: string, codeMac: Buffer, failureBudget: number): Promise<CodeTry[]> {
    return tx.query<CodeTry>(tryCodeSql("channel = 'email' and address = $2"), [codeMac, address, failureBudget]);
  },

  /** A code tried on one verification; undefined when it is no longer open or its user's budget is spent. */
  async tryCode(tx: Sql, id: string, codeMac: Buffer, failureBudget: number): Promise<CodeTry | undefined> {
    const [row] = await tx.query<CodeTry>(tryCodeSql("id = $2"), [codeMac, id, failureBudget]);
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

  /**
   * Closes every change of address the user has waiting: when the password
   * changes or the account is disabled, a change started by whoever held the
   * old credentials must not complete afterwards.
   */
  async closeAllOf(tx: Sql, userId: string): Promise<void> {
    await tx.query("update contact_verification set close_time = now() where user_id = $1 and close_time is null", [userId]);
  },

  async close(sql: Sql, id: string): Promise<void> {
    await sql.query("update contact_verification set close_time = now() where id = $1 and close_time is null", [id]);
  },

  purgeClosed(db: Database): Promise<number> {
    return db.deleteInPages("contact_verification", "id", "close_time is not null or expire_time < now()");
  },
};
