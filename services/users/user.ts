import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { KycStatus } from "../../gen/portcullis/v1/common_pb.js";
import type { UserSchema } from "../../gen/portcullis/v1/auth_service_pb.js";

/** A user as the store returns it: what a sign-in and a profile need. */
export interface UserRow {
  id: string;
  phone_number: string | null;
  email: string | null;
  display_name: string;
  kyc_level: number;
  kyc_status: keyof typeof KycStatus;
  permissions: string[];
  disable_time: Date | null;
  create_time: Date;
  /** When the email address was confirmed; null for none yet, or no address. */
  email_verify_time: Date | null;
}

export function userMessage(row: UserRow): MessageInitShape<typeof UserSchema> {
  return {
    userId: row.id,
    phoneNumber: row.phone_number ?? "",
    email: row.email ?? "",
    displayName: row.display_name,
    kycLevel: row.kyc_level,
    kycStatus: KycStatus[row.kyc_status] ?? KycStatus.UNSPECIFIED,
    createTime: timestampFromDate(row.create_time),
    emailVerified: row.email_verify_time !== null,
  };
}

export function claimsOf(row: UserRow) {
  return {
    userId: row.id,
    kycLevel: row.kyc_level,
    kycStatus: row.kyc_status,
    permissions: row.permissions,
    emailVerified: row.email_verify_time !== null,
  };
}
