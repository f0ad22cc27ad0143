import { Migration } from "@mikro-orm/migrations";

/** Users, device sessions, refresh tokens, OTP challenges and the audit log. */
export class Migration0002SignIn extends Migration {
  override up(): void {
    this.addSql(`
      create table app_user (
        id uuid primary key,
        phone_number text unique,
        phone_verify_time timestamptz,
        email text unique,
        password_hash text,
        display_name text not null default '',
        kyc_level smallint not null default 0,
        kyc_status text not null default 'NONE',
        permissions text[] not null default '{}',
        failed_logins integer not null default 0,
        lockouts integer not null default 0,
        locked_until timestamptz,
        disable_time timestamptz,
        create_time timestamptz not null default now(),
        update_time timestamptz not null default now()
      )`);
    this.addSql(`
      create table session (
        id uuid primary key,
        user_id uuid not null references app_user (id) on delete cascade,
        device_id text not null,
        device_type text not null,
        device_name text not null,
        ip_address text not null,
        user_agent text not null,
        sign_in_method text not null,
        create_time timestamptz not null default now(),
        last_active_time timestamptz not null default now(),
        idle_expire_time timestamptz not null,
        expire_time timestamptz not null,
        revoke_time timestamptz,
        revoke_reason text
      )`);
    this.addSql(`create index session_live_by_user_idx on session (user_id, create_time) where revoke_time is null`);
    this.addSql(`create index session_revoke_time_idx on session (revoke_time) where revoke_time is not null`);
    this.addSql(`
      create table refresh_token (
        token_hash bytea primary key,
        session_id uuid not null references session (id) on delete cascade,
        create_time timestamptz not null default now(),
        expire_time timestamptz not null,
        use_time timestamptz
      )`);
    this.addSql(`create index refresh_token_session_idx on refresh_token (session_id)`);
    this.addSql(`
      create table otp_challenge (
        id uuid primary key,
        phone_number text not null,
        code_mac bytea not null,
        attempts integer not null default 0,
        max_attempts integer not null,
        create_time timestamptz not null default now(),
        expire_time timestamptz not null,
        close_time timestamptz
      )`);
    this.addSql(`create unique index otp_challenge_open_idx on otp_challenge (phone_number) where close_time is null`);
    this.addSql(`
      create table otp_failure (
        phone_number text not null,
        fail_time timestamptz not null default now()
      )`);
    this.addSql(`create index otp_failure_phone_idx on otp_failure (phone_number, fail_time)`);
    this.addSql(`
      create table audit_event (
        id bigserial primary key,
        event_time timestamptz not null default now(),
        event text not null,
        outcome text not null,
        user_id uuid,
        session_id uuid,
        ip_address text,
        user_agent text,
        request_id text,
        detail jsonb not null default '{}'
      )`);
    this.addSql(`create index audit_event_user_idx on audit_event (user_id, event_time)`);
  }
}
