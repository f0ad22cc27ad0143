import { Migration } from "@mikro-orm/migrations";

/**
 * Passkeys (WebAuthn credentials) and their ceremonies. A ceremony row is the
 * challenge a Start call handed out; Finish deletes it as it reads it, so it
 * is used once. Its id is an HMAC of the id the client holds, as for MFA
 * challenges.
 */
export class Migration0011Passkeys extends Migration {
  override up(): void {
    this.addSql(`
      create table passkey (
        id uuid primary key,
        user_id uuid not null references app_user (id) on delete cascade,
        credential_id text not null unique,
        public_key bytea not null,
        sign_count bigint not null default 0,
        transports text[] not null default '{}',
        aaguid text not null default '',
        backup_eligible boolean not null default false,
        name text not null,
        create_time timestamptz not null default now(),
        last_use_time timestamptz
      )`);
    this.addSql(`create index passkey_user_idx on passkey (user_id, create_time)`);
    this.addSql(`
      create table passkey_ceremony (
        id uuid primary key,
        kind text not null check (kind in ('registration', 'sign_in')),
        user_id uuid references app_user (id) on delete cascade,
        challenge text not null,
        expire_time timestamptz not null,
        check ((kind = 'registration') = (user_id is not null))
      )`);
    this.addSql(`create index passkey_ceremony_expire_idx on passkey_ceremony (expire_time)`);
  }
}
