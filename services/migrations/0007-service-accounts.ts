import { Migration } from "@mikro-orm/migrations";

/**
 * Service accounts and their credentials (public keys for client assertions,
 * or client secrets kept as hashes), and the ids of assertions already used,
 * so a captured assertion cannot be replayed while it is still valid.
 */
export class Migration0007ServiceAccounts extends Migration {
  override up(): void {
    this.addSql(`
      create table service_account (
        name text primary key,
        audiences text[] not null,
        permissions text[] not null default '{}',
        create_time timestamptz not null default now(),
        update_time timestamptz not null default now(),
        disable_time timestamptz
      )`);
    this.addSql(`
      create table service_credential (
        id uuid primary key,
        service_name text not null references service_account (name) on delete cascade,
        kind text not null check (kind in ('public_key', 'client_secret')),
        key_id text,
        public_jwk jsonb,
        secret_hash bytea,
        create_time timestamptz not null default now(),
        last_use_time timestamptz,
        revoke_time timestamptz,
        check ((kind = 'public_key') = (public_jwk is not null and key_id is not null)),
        check ((kind = 'client_secret') = (secret_hash is not null))
      )`);
    this.addSql(`create index service_credential_active_idx on service_credential (service_name) where revoke_time is null`);
    this.addSql(`
      create table client_assertion_use (
        service_name text not null,
        jti text not null,
        expire_time timestamptz not null,
        primary key (service_name, jti)
      )`);
    this.addSql(`create index client_assertion_use_expire_idx on client_assertion_use (expire_time)`);
  }
}
