import { Migration } from "@mikro-orm/migrations";

/**
 * Wrong passwords counted per account and source (an IP, or an IPv6 client's
 * prefix): an attacker's failures lock the account only for the attacker's
 * source, while app_user's own counters keep a looser ceiling for all sources
 * together.
 */
export class Migration0005PasswordFailureSources extends Migration {
  override up(): void {
    this.addSql(`
      create table password_failure (
        user_id uuid not null references app_user (id) on delete cascade,
        source text not null,
        failures integer not null default 0,
        lockouts integer not null default 0,
        locked_until timestamptz,
        fail_time timestamptz not null default now(),
        primary key (user_id, source)
      )`);
    this.addSql(`create index password_failure_fail_time_idx on password_failure (fail_time)`);
  }
}
