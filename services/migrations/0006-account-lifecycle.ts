import { Migration } from "@mikro-orm/migrations";

/**
 * Verified email addresses and phone numbers, password resets, the devices
 * each user has signed in from, and permissions taken away (which, like a
 * KYC lowering, must reach tokens already issued).
 */
export class Migration0006AccountLifecycle extends Migration {
  override up(): void {
    this.addSql(`alter table app_user add column email_verify_time timestamptz, add column permissions_lower_time timestamptz`);
    // Accounts made before addresses were verified keep signing in: their owners had no way to verify.
    this.addSql(`update app_user set email_verify_time = create_time where email is not null`);
    this.addSql(`create index app_user_permissions_lower_time_idx on app_user (permissions_lower_time) where permissions_lower_time is not null`);
    this.addSql(`create index app_user_create_time_idx on app_user (create_time, id)`);
    // Operators search by prefix (like 'ana%'), which the unique indexes cannot serve outside the C collation.
    this.addSql(`create index app_user_email_prefix_idx on app_user (email text_pattern_ops)`);
    this.addSql(`create index app_user_phone_prefix_idx on app_user (phone_number text_pattern_ops)`);

    // A code (and for email a link token) proving an address is the user's: at registration, or for a new address.
    this.addSql(`
      create table contact_verification (
        id uuid primary key,
        user_id uuid not null references app_user (id) on delete cascade,
        channel text not null check (channel in ('email', 'phone')),
        address text not null,
        code_mac bytea not null,
        link_mac bytea unique,
        attempts integer not null default 0,
        max_attempts integer not null,
        create_time timestamptz not null default now(),
        expire_time timestamptz not null,
        close_time timestamptz
      )`);
    this.addSql(`create unique index contact_verification_open_idx on contact_verification (user_id, channel) where close_time is null`);
    this.addSql(`create index contact_verification_address_idx on contact_verification (address) where close_time is null`);

    this.addSql(`
      create table password_reset (
        id uuid primary key,
        user_id uuid not null references app_user (id) on delete cascade,
        code_mac bytea not null,
        link_mac bytea not null unique,
        attempts integer not null default 0,
        max_attempts integer not null,
        create_time timestamptz not null default now(),
        expire_time timestamptz not null,
        close_time timestamptz
      )`);
    this.addSql(`create index password_reset_open_idx on password_reset (user_id) where close_time is null`);

    this.addSql(`
      create table user_device (
        user_id uuid not null references app_user (id) on delete cascade,
        device_id text not null,
        first_seen_time timestamptz not null default now(),
        primary key (user_id, device_id)
      )`);

    this.addSql(`create index audit_event_time_idx on audit_event (event_time, id)`);
  }
}
