import { Migration } from "@mikro-orm/migrations";

/**
 * Every instance asks each second for the users whose KYC level was lowered in
 * the last few seconds: an index scan over the few ever lowered, not a pass
 * over every user.
 */
export class Migration0004KycLowerTime extends Migration {
  override up(): void {
    this.addSql(`create index app_user_kyc_lower_time_idx on app_user (kyc_lower_time) where kyc_lower_time is not null`);
  }
}
