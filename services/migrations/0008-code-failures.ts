import { Migration } from "@mikro-orm/migrations";

/**
 * Wrong email-verification, phone-verification and password-reset codes per
 * user, counted across codes against a daily budget (as otp_failure counts
 * sign-in codes per number).
 */
export class Migration0008CodeFailures extends Migration {
  override up(): void {
    this.addSql(`
      create table code_failure (
        user_id uuid not null references app_user (id) on delete cascade,
        fail_time timestamptz not null default now()
      )`);
    this.addSql(`create index code_failure_user_idx on code_failure (user_id, fail_time)`);
  }
}
