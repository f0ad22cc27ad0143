import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { listUserEvents, type UserEventRow } from "../audit/store.js";
import type { Database } from "../platform/database.js";
import { sessionStore } from "../session/store.js";
import type { SecurityEventSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import { maskEmail } from "./one-time-secrets.js";
import { maskPhone } from "./phone.js";

/**
 * What the account's owner is shown of the audit log: what happened to the
 * account. The rest (refreshes, rate-limit hits, operators reading data) is
 * for operators.
 */
const ownerEvents = [
  "sign_in", "sign_in.new_device", "register", "logout", "session.revoke", "token.reuse_detected",
  "password.change", "password.reset", "password.reset_requested",
  "email.verify", "email.change", "email.change_requested", "phone.change",
  "account.locked", "account.disable", "account.enable", "account.unlock",
  "kyc.submit", "kyc.level_change", "kyc.reject", "permission.grant", "permission.revoke",
] as const;

/** Detail keys naming who else acted: an operator's or a reviewer's id is theirs, not the owner's to see. */
const actorKeys = new Set(["actor", "reviewer", "by"]);

const e164 = /^\+\d{7,15}$/;
const email = /^[^\s@]+@[^\s@]+$/;

/** A user's own security events, newest first. */
export class SecurityEvents {
  constructor(private readonly db: Database) {}

  async list(userId: string, pageSize: number, after?: [string, string]) {
    const rows = await listUserEvents(this.db, userId, ownerEvents, after, pageSize + 1);
    const page = rows.slice(0, pageSize);
    const sessionIds = [...new Set(page.flatMap((row) => (row.session_id ? [row.session_id] : [])))];
    const deviceNames = await sessionStore.deviceNames(this.db, sessionIds);
    const last = rows.length > pageSize ? page.at(-1) : undefined;
    return {
      events: page.map((row) => securityEvent(row, userId, deviceNames)),
      next: last && ([last.page_time, last.id] as [string, string]),
    };
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
    details: Object.fromEntries(Object.entries(rest).flatMap(([key, value]) => (actorKeys.has(key) ? [] : [[key, shown(value)]]))),
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
