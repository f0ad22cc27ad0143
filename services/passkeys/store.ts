import type { Database, Sql } from "../platform/database.js";
import type { SecondFactorSql } from "../session/store.js";

/** A passkey as its owner and the sign-in see it. */
export interface PasskeyRow {
  id: string;
  user_id: string;
  name: string;
  /** base64url, as WebAuthn's JSON carries it. */
  credential_id: string;
  public_key: Buffer;
  sign_count: number;
  transports: string[];
  backup_eligible: boolean;
  create_time: Date;
  last_use_time: Date | null;
}

export interface PasskeyInsert {
  id: string;
  userId: string;
  name: string;
  credentialId: string;
  publicKey: Uint8Array;
  signCount: number;
  transports: string[];
  aaguid: string;
  backupEligible: boolean;
}

export type CeremonyKind = "registration" | "sign_in";

// sign_count is a bigint (an authenticator's counter is 32 bits unsigned); float8 brings it back as a number, exactly.
const passkeyColumns =
  "id, user_id, name, credential_id, public_key, sign_count::float8 as sign_count, transports, backup_eligible, create_time, last_use_time";

/** The passkey table: users' WebAuthn credentials. Every query a user makes is scoped to their own. */
export const passkeyStore = {
  /** The new passkey, or undefined when the credential is registered already (to anyone). */
  async insert(sql: Sql, passkey: PasskeyInsert): Promise<PasskeyRow | undefined> {
    const [row] = await sql.query<PasskeyRow>(
      `insert into passkey (id, user_id, name, credential_id, public_key, sign_count, transports, aaguid, backup_eligible)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
       on conflict (credential_id) do nothing returning ${passkeyColumns}`,
      [
        passkey.id,
        passkey.userId,
        passkey.name,
        passkey.credentialId,
        Buffer.from(passkey.publicKey),
        passkey.signCount,
        passkey.transports,
        passkey.aaguid,
        passkey.backupEligible,
      ],
    );
    return row;
  },

  async byCredentialId(sql: Sql, credentialId: string): Promise<PasskeyRow | undefined> {
    const [row] = await sql.query<PasskeyRow>(`select ${passkeyColumns} from passkey where credential_id = $1`, [credentialId]);
    return row;
  },

  /** Newest first. */
  listOf(sql: Sql, userId: string): Promise<PasskeyRow[]> {
    return sql.query<PasskeyRow>(`select ${passkeyColumns} from passkey where user_id = $1 order by create_time desc, id desc`, [userId]);
  },

  /** The user's credentials as registration options exclude them. */
  credentialsOf(sql: Sql, userId: string): Promise<{ credential_id: string; transports: string[] }[]> {
    return sql.query("select credential_id, transports from passkey where user_id = $1", [userId]);
  },

  /**
   * Records a sign-in's counter, only if no other sign-in moved it since it
   * was read: of two uses racing from one counter value, one passes (the
   * other gets undefined). With it, whether the owner has a second factor,
   * by the fragment of that table's owner, in the same round trip.
   */
  async used(
    sql: Sql,
    id: string,
    readCount: number,
    newCount: number,
    enrolled: SecondFactorSql,
  ): Promise<{ mfa_enrolled: boolean } | undefined> {
    const [row] = await sql.query<{ mfa_enrolled: boolean }>(
      `update passkey set sign_count = $3, last_use_time = now() where id = $1 and sign_count = $2
       returning ${enrolled("passkey.user_id")} as mfa_enrolled`,
      [id, readCount, newCount],
    );
    return row;
  },

  async rename(sql: Sql, id: string, userId: string, name: string): Promise<PasskeyRow | undefined> {
    const [row] = await sql.query<PasskeyRow>(`update passkey set name = $3 where id = $1 and user_id = $2 returning ${passkeyColumns}`, [id, userId, name]);
    return row;
  },

  async delete(sql: Sql, id: string, userId: string): Promise<boolean> {
    const rows = await sql.query("delete from passkey where id = $1 and user_id = $2 returning 1", [id, userId]);
    return rows.length === 1;
  },
};

/**
 * The passkey_ceremony table: challenges handed out by Start calls, each
 * stored under an HMAC of the id its client holds and taken back once.
 */
export const ceremonyStore = {
  async open(sql: Sql, ceremony: { id: string; kind: CeremonyKind; userId: string | null; challenge: string; expireTime: Date }): Promise<void> {
    await sql.query("insert into passkey_ceremony (id, kind, user_id, challenge, expire_time) values ($1, $2, $3, $4, $5)", [
      ceremony.id,
      ceremony.kind,
      ceremony.userId,
      ceremony.challenge,
      ceremony.expireTime,
    ]);
  },

  /**
   * Deletes an unexpired ceremony of this kind (and of this user, for a
   * registration) as it reads it: of any number of racing calls, one gets its
   * challenge. A ceremony of another user is left alone.
   */
  async consume(sql: Sql, id: string, kind: CeremonyKind, userId: string | null): Promise<string | undefined> {
    const [row] = await sql.query<{ challenge: string }>(
      `delete from passkey_ceremony
       where id = $1 and kind = $2 and user_id is not distinct from $3::uuid and expire_time > now()
       returning challenge`,
      [id, kind, userId],
    );
    return row?.challenge;
  },

  purgeExpired(db: Database): Promise<number> {
    return db.deleteInPages("passkey_ceremony", "id", "expire_time < now()");
  },
};
