import type { JWK } from "jose";
import type { Database, Sql } from "../platform/database.js";

/** A service account as the store returns it. */
export interface ServiceAccountRow {
  name: string;
  audiences: string[];
  permissions: string[];
  create_time: Date;
  disable_time: Date | null;
}

const accountColumns = "name, audiences, permissions, create_time, disable_time";

export type CredentialKind = "public_key" | "client_secret";

/** A credential as the store returns it; `secret_hash` only for the statements that prove a client. */
export interface ServiceCredentialRow {
  id: string;
  service_name: string;
  kind: CredentialKind;
  /** RFC 7638 thumbprint of `public_jwk`. */
  key_id: string | null;
  public_jwk: JWK | null;
  create_time: Date;
  last_use_time: Date | null;
}

export interface ProvingCredentialRow extends ServiceCredentialRow {
  secret_hash: Buffer | null;
}

const credentialColumns = "id, service_name, kind, key_id, public_jwk, create_time, last_use_time";

/** A new credential: a public key with its thumbprint, or a secret's keyed hash. */
export type NewCredential =
  | { id: string; kind: "public_key"; keyId: string; publicJwk: JWK }
  | { id: string; kind: "client_secret"; secretHash: Buffer };

/**
 * The service_account, service_credential and client_assertion_use tables:
 * every statement on them is here.
 */
export const serviceAccountStore = {
  async find(sql: Sql, name: string): Promise<ServiceAccountRow | undefined> {
    const [row] = await sql.query<ServiceAccountRow>(`select ${accountColumns} from service_account where name = $1`, [name]);
    return row;
  },

  /** The accounts of those names that exist, in one round trip. */
  findAll(sql: Sql, names: readonly string[]): Promise<ServiceAccountRow[]> {
    return sql.query<ServiceAccountRow>(`select ${accountColumns} from service_account where name = any($1::text[])`, [names]);
  },

  /** The account as it stands, kept from being disabled until the transaction ends (a disable waits, or has committed). */
  async lockShared(sql: Sql, name: string): Promise<ServiceAccountRow | undefined> {
    const [row] = await sql.query<ServiceAccountRow>(`select ${accountColumns} from service_account where name = $1 for share`, [name]);
    return row;
  },

  /** The account, locked until the transaction ends: its credentials change one transaction at a time. */
  async lock(sql: Sql, name: string): Promise<ServiceAccountRow | undefined> {
    const [row] = await sql.query<ServiceAccountRow>(`select ${accountColumns} from service_account where name = $1 for update`, [name]);
    return row;
  },

  /** The new account, or undefined when the name is taken. */
  async create(sql: Sql, name: string, audiences: readonly string[], permissions: readonly string[]): Promise<ServiceAccountRow | undefined> {
    const [row] = await sql.query<ServiceAccountRow>(
      `insert into service_account (name, audiences, permissions) values ($1, $2, $3)
       on conflict (name) do nothing returning ${accountColumns}`,
      [name, audiences, permissions],
    );
    return row;
  },

  /** By name, from after `after` on. */
  list(sql: Sql, after: string | undefined, limit: number): Promise<ServiceAccountRow[]> {
    return sql.query<ServiceAccountRow>(
      `select ${accountColumns} from service_account where $1::text is null or name > $1 order by name limit $2`,
      [after ?? null, limit],
    );
  },

  /** The account as it is now; a disabled one keeps the time it was first disabled. Undefined for no such account. */
  async disable(sql: Sql, name: string): Promise<ServiceAccountRow | undefined> {
    const [row] = await sql.query<ServiceAccountRow>(
      `update service_account set disable_time = coalesce(disable_time, now()), update_time = now() where name = $1 returning ${accountColumns}`,
      [name],
    );
    return row;
  },

  async addCredential(sql: Sql, serviceName: string, credential: NewCredential): Promise<ServiceCredentialRow> {
    const [row] = await sql.query<ServiceCredentialRow>(
      `insert into service_credential (id, service_name, kind, key_id, public_jwk, secret_hash) values ($1, $2, $3, $4, $5, $6)
       returning ${credentialColumns}`,
      [
        credential.id,
        serviceName,
        credential.kind,
        credential.kind === "public_key" ? credential.keyId : null,
        credential.kind === "public_key" ? JSON.stringify(credential.publicJwk) : null,
        credential.kind === "client_secret" ? credential.secretHash : null,
      ],
    );
    return row!;
  },

  /** Whether an active credential of the account was revoked. */
  async revokeCredential(sql: Sql, serviceName: string, id: string): Promise<boolean> {
    const rows = await sql.query(
      `update service_credential set revoke_time = now() where id = $1 and service_name = $2 and revoke_time is null returning 1`,
      [id, serviceName],
    );
    return rows.length > 0;
  },

  /** The active credentials of the accounts, oldest first, without secret hashes. */
  activeCredentials(sql: Sql, serviceNames: readonly string[]): Promise<ServiceCredentialRow[]> {
    return sql.query<ServiceCredentialRow>(
      `select ${credentialColumns} from service_credential
       where service_name = any($1::text[]) and revoke_time is null order by create_time, id`,
      [serviceNames],
    );
  },

  /** The account's active credentials of one kind, with what proves them. */
  provingCredentials(sql: Sql, serviceName: string, kind: CredentialKind): Promise<ProvingCredentialRow[]> {
    return sql.query<ProvingCredentialRow>(
      `select ${credentialColumns}, secret_hash from service_credential
       where service_name = $1 and kind = $2 and revoke_time is null order by create_time, id`,
      [serviceName, kind],
    );
  },

  /**
   * Whether the credential was still active: a revocation committed since it
   * was read leaves no row to update (and one in flight is waited for, then
   * seen).
   */
  async markUsed(sql: Sql, credentialId: string): Promise<boolean> {
    const rows = await sql.query(`update service_credential set last_use_time = now() where id = $1 and revoke_time is null returning 1`, [credentialId]);
    return rows.length > 0;
  },

  /**
   * Records a client assertion's jti until it expires; false when the account
   * already used it (a replay). A second use racing the first waits for its
   * transaction and then finds the row.
   */
  async recordAssertion(sql: Sql, serviceName: string, jti: string, expireTime: Date): Promise<boolean> {
    const rows = await sql.query(
      `insert into client_assertion_use (service_name, jti, expire_time) values ($1, $2, $3) on conflict do nothing returning 1`,
      [serviceName, jti, expireTime],
    );
    return rows.length > 0;
  },

  /** Assertions past their expiry cannot be replayed anyway. */
  purgeUsedAssertions(db: Database): Promise<number> {
    return db.deleteInPages("client_assertion_use", "ctid", "expire_time < now()");
  },
};
