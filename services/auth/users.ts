import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { KycStatus } from "../../gen/portcullis/v1/common_pb.js";
import type { UserSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { Sql } from "../platform/database.js";
import type { DeviceInput } from "../session/sessions.js";
import type { Violations } from "../platform/validation.js";
import { textProblem } from "../platform/validation.js";
import { DeviceType, type Device } from "../../gen/portcullis/v1/common_pb.js";

/** The columns of app_user a sign-in needs, as raw SQL returns them. */
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
}

export const userColumns = "id, phone_number, email, display_name, kyc_level, kyc_status, permissions, disable_time, create_time";

export function userMessage(row: UserRow): MessageInitShape<typeof UserSchema> {
  return {
    userId: row.id,
    phoneNumber: row.phone_number ?? "",
    email: row.email ?? "",
    displayName: row.display_name,
    kycLevel: row.kyc_level,
    kycStatus: KycStatus[row.kyc_status] ?? KycStatus.UNSPECIFIED,
    createTime: timestampFromDate(row.create_time),
  };
}

export function claimsOf(row: UserRow) {
  return { userId: row.id, kycLevel: row.kyc_level, kycStatus: row.kyc_status, permissions: row.permissions };
}

export async function findUser(sql: Sql, id: string): Promise<UserRow | undefined> {
  const [row] = await sql.query<UserRow>(`select ${userColumns} from app_user where id = $1`, [id]);
  return row;
}

/** Every sign-in names the device it creates a session for. */
export function checkDevice(device: Device | undefined, violations: Violations): DeviceInput {
  if (!device) {
    violations.add("device", "required: the device signing in (device_id, device_type, device_name)");
    return { deviceId: "", deviceType: DeviceType.UNSPECIFIED, deviceName: "" };
  }
  violations.add("device.device_id", textProblem(device.deviceId, 1, 128));
  violations.add("device.device_name", textProblem(device.deviceName, 0, 100));
  if (DeviceType[device.deviceType] === undefined) violations.add("device.device_type", "unknown device type");
  return { deviceId: device.deviceId, deviceType: device.deviceType, deviceName: device.deviceName };
}
