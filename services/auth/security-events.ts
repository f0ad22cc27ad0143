import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { listUserEvents, type UserEventRow } from "../audit/store.js";
import { pageOf } from "../kernel/pagination.js";
import type { Database } from "../platform/database.js";
import { sessionStore } from "../session/store.js";
import type { SecurityEventSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { maskEmail } from "./email.js";
import { maskPhone } from "./phone.js";

/**
 * What the account's owner is shown of the audit log: what happened to the
 * account, and of each event the details named here (besides `method`),
 * which flows write as fixed words, counts and masked numbers. Every other
 * detail, such as the reason an operator typed for disabling the account, and
 * every other event (refreshes, rate-limit hits, operators reading data) is
 * for operators.
 */
const ownerDetails: Readonly<Record<string, readonly string[]>> = {
  "sign_in": ["reason", "new_user", "evicted", "resent"],
  "sign_in.new_device": ["notice"],
  "otp.verify": ["phone", "reason", "attempt", "failures_in_window"],
  "register": ["reason"],
  "logout": [],
  "session.revoke": ["reason"],
  "token.reuse_detected": [],
  "password.change": ["revoked_sessions"],
  "password.reset": ["via", "reason", "revoked_sessions", "unlocked"],
  "password.reset_requested": ["reason"],
  "email.verify": [],
  "email.change": ["reason", "added"],
  "email.change_requested": ["reason", "added"],
  "phone.change": ["phone", "reason", "attempt", "closed"],
  "account.locked": ["scope", "lockouts", "until"],
  "account.disable": ["revoked_sessions"],
  "account.enable": [],
  "account.unlock": ["was_locked"],
  "kyc.submit": ["level"],
  "kyc.level_change": ["level", "from", "to"],
  "kyc.reject": ["level", "reason"],
  "permission.grant": ["permission"],
  "permission.revoke": ["permission"],
  "passkey.registered": ["passkey", "synced", "reason"],
  "passkey.renamed": ["passkey"],
  "passkey.deleted": ["passkey"],
  "passkey.sign_in": ["passkey", "reason"],
  "passkey.clone_suspected": ["passkey"],
};
const ownerEvents = Object.keys(ownerDetails);

/** Detail keys naming who else acted: then the row's address and user agent are theirs, not the owner's to see. */
const actorKeys = new Set(["actor", "reviewer", "by"]);

const e164 = /^\+\d{7,15}$/;
const email = /^[^\s@]+@[^\s@]+$/;

/** A user's own security events, newest first. */
export class SecurityEvents {
  constructor(private readonly db: Database) {}

  async list(userId: string, pageSize: number, after?: [string, string]) {
    const { page, nextPageToken } = pageOf(await listUserEvents(this.db, userId, ownerEvents, after, pageSize + 1), pageSize);
    const sessionIds = [...new Set(page.flatMap((row) => (row.session_id ? [row.session_id] : [])))];
    const deviceNames = await sessionStore.deviceNames(this.db, sessionIds);
    return { events: page.map((row) => securityEvent(row, userId, deviceNames)), nextPageToken };
  }
}

function securityEvent(row: UserEventRow, userId: string, deviceNames: Map<string, string>): MessageInitShape<typeof SecurityEventSchema> {
  const { method, ...rest } = row.detail;
  // Done by someone else (an operator, a reviewer): the row's address and user agent are theirs.
  const byOther = Object.entries(rest).some(([key, value]) => actorKeys.has(key) && value !== userId);
  return {
    eventId: row.id,
    type: row.event,
    outcome: row.outcome,
    time: timestampFromDate(row.event_time),
    ipAddress: byOther ? "" : (row.ip_address ?? ""),
    userAgent: byOther ? "" : (row.user_agent ?? ""),
    deviceName: (row.session_id && deviceNames.get(row.session_id)) || "",
    method: typeof method === "string" ? method : "",
    sessionId: row.session_id ?? "",
    details: Object.fromEntries((ownerDetails[row.event] ?? []).flatMap((key) => (key in rest ? [[key, shown(rest[key])]] : []))),
  };
}

/**
 * A detail as text. Flows write numbers and addresses masked already; one
 * written in full by mistake is masked here, as this list goes to a screen.
 */
function shown(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  if (e164.test(text)) return maskPhone(text);
  if (email.test(text)) return maskEmail(text);
  return text;
}
