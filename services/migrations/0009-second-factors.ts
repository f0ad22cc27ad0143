import { Migration } from "@mikro-orm/migrations";

/**
 * Second factors: a TOTP factor per user (its secret sealed), single-use
 * recovery codes (as HMACs), wrong second factors counted against a budget,
 * the challenge a sign-in answers when the account has a second factor, and
 * the assurance level each session reached (so a refresh keeps it).
 */
export class Migration0009SecondFactors extends Migration {
  override up(): void {
    // Unconfirmed until the app proves it has the secret; last_used_step refuses a code twice, across instances.
    this.addSql(`
      create table totp_factor (
        user_id uuid primary key references app_user (id) on delete cascade,
        secret_sealed text not null,
        confirm_time timestamptz,
        last_used_step bigint not null default 0,
        create_time timestamptz not null default now()
      )`);

    this.addSql(`
      create table recovery_code (
        user_id uuid not null references app_user (id) on delete cascade,
        code_hash bytea not null,
        use_time timestamptz,
        create_time timestamptz not null default now(),
        primary key (user_id, code_hash)
      )`);

    this.addSql(`
      create table mfa_failure (
        user_id uuid not null references app_user (id) on delete cascade,
        fail_time timestamptz not null default now()
      )`);
    this.addSql(`create index mfa_failure_user_idx on mfa_failure (user_id, fail_time)`);

    // Bound to the first factor's device and IP; the method says which first factor it was.
    this.addSql(`
      create table mfa_challenge (
        id uuid primary key,
        user_id uuid not null references app_user (id) on delete cascade,
        method text not null,
        device_id text not null,
        device_type text not null,
        device_name text not null,
        client_ip text not null,
        attempts integer not null default 0,
        max_attempts integer not null,
        create_time timestamptz not null default now(),
        expire_time timestamptz not null,
        close_time timestamptz
      )`);
    this.addSql(`create index mfa_challenge_user_idx on mfa_challenge (user_id) where close_time is null`);
    this.addSql(`create index mfa_challenge_expire_time_idx on mfa_challenge (expire_time)`);

    this.addSql(`alter table session add column aal smallint not null default 1, add column mfa_time timestamptz`);
  }
}
