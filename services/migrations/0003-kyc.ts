import { Migration } from "@mikro-orm/migrations";

/** KYC submissions (details sealed at rest) and the time a user's level was last lowered. */
export class Migration0003Kyc extends Migration {
  override up(): void {
    this.addSql(`
      create table kyc_submission (
        id uuid primary key,
        user_id uuid not null references app_user (id) on delete cascade,
        requested_level smallint not null,
        status text not null,
        sealed_details text not null,
        document_index bytea,
        flags text[] not null default '{}',
        create_time timestamptz not null default now(),
        review_time timestamptz,
        reviewer_id uuid,
        rejection_reason text
      )`);
    this.addSql(`create unique index kyc_submission_one_pending_idx on kyc_submission (user_id) where status = 'PENDING'`);
    this.addSql(`create index kyc_submission_status_idx on kyc_submission (status, create_time, id)`);
    this.addSql(`create index kyc_submission_document_idx on kyc_submission (document_index) where document_index is not null`);
    this.addSql(`alter table app_user add column kyc_lower_time timestamptz`);
  }
}
