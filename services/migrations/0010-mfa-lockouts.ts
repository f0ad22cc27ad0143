import { Migration } from "@mikro-orm/migrations";

/**
 * Each time a user spent the whole MFA failure budget, and until when their
 * second factors are refused: a day's repeated exhaustions lock for longer.
 * And the index the revocation feed reads recent TOTP enrolments by.
 */
export class Migration0010MfaLockouts extends Migration {
  override up(): void {
    this.addSql(`
      create table mfa_lockout (
        user_id uuid not null references app_user (id) on delete cascade,
        lock_time timestamptz not null default now(),
        until_time timestamptz not null
      )`);
    this.addSql(`create index mfa_lockout_user_idx on mfa_lockout (user_id, lock_time)`);
    this.addSql(`create index totp_factor_confirm_time_idx on totp_factor (confirm_time) where confirm_time is not null`);
  }
}
