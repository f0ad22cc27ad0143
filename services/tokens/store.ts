import type { JWK } from "jose";
import type { SigningAlgorithm } from "../platform/config.js";
import type { Sql } from "../platform/database.js";

/**
 * A row of signing_key. It is published from creation, signs from
 * `activateTime` until its successor activates (`retireTime`), and stays
 * published until every token it signed has expired.
 */
export interface StoredKey {
  kid: string;
  algorithm: SigningAlgorithm;
  publicJwk: JWK;
  sealedPrivateJwk: string;
  activateTime: Date;
  retireTime: Date | null;
}

const storedKeyColumns =
  'kid, algorithm, public_jwk as "publicJwk", sealed_private_jwk as "sealedPrivateJwk", activate_time as "activateTime", retire_time as "retireTime"';

/** Any instance may rotate; this lock makes one do it at a time. */
const rotationLockId = 0x706f7274; // "port"

/** The signing_key table: the key ring's timetable and sealed keys, shared by every instance. */
export const signingKeyStore = {
  /** Holds the rotation lock until the transaction ends. */
  async lockRotation(tx: Sql): Promise<void> {
    await tx.query("select pg_advisory_xact_lock($1)", [rotationLockId]);
  },

  all(sql: Sql): Promise<StoredKey[]> {
    return sql.query<StoredKey>(`select ${storedKeyColumns} from signing_key order by activate_time`);
  },

  async remove(tx: Sql, kids: string[]): Promise<void> {
    await tx.query("delete from signing_key where kid = any($1)", [kids]);
  },

  async retire(tx: Sql, kid: string, retireTime: Date): Promise<void> {
    await tx.query("update signing_key set retire_time = $1 where kid = $2", [retireTime, kid]);
  },

  async add(tx: Sql, key: StoredKey, createTime: Date): Promise<void> {
    await tx.query(
      "insert into signing_key (kid, algorithm, public_jwk, sealed_private_jwk, create_time, activate_time) values ($1, $2, $3, $4, $5, $6)",
      [key.kid, key.algorithm, key.publicJwk, key.sealedPrivateJwk, createTime, key.activateTime],
    );
  },
};
