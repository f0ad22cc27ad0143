import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { audit } from "../platform/audit.js";
import type { Database } from "../platform/database.js";
import { Code, ConnectError, invalidArgument } from "../platform/errors.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "../platform/pagination.js";
import { uuidPattern } from "../platform/validation.js";
import type { CallContext, ServiceHandlers } from "../policy/call.js";
import { DeviceType, SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import { SessionService, type SessionSchema } from "../../gen/portcullis/v1/session_service_pb.js";
import type { Sessions } from "./sessions.js";

/** Holders may sign out anyone's session (support, incident response). */
export const sessionAdminPermission = "session.admin";

const liveSession = "revoke_time is null and expire_time > now() and idle_expire_time > now()";
const sessionColumns =
  "id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, create_time, last_active_time, idle_expire_time, expire_time";

interface SessionRow {
  id: string;
  user_id: string;
  device_id: string;
  device_type: keyof typeof DeviceType;
  device_name: string;
  ip_address: string;
  user_agent: string;
  sign_in_method: keyof typeof SignInMethod;
  create_time: Date;
  last_active_time: Date;
  idle_expire_time: Date;
  expire_time: Date;
}

function sessionMessage(row: SessionRow, currentSessionId: string): MessageInitShape<typeof SessionSchema> {
  return {
    sessionId: row.id,
    userId: row.user_id,
    device: { deviceId: row.device_id, deviceType: DeviceType[row.device_type], deviceName: row.device_name },
    ipAddress: row.ip_address,
    userAgent: row.user_agent,
    signInMethod: SignInMethod[row.sign_in_method],
    createTime: timestampFromDate(row.create_time),
    lastActiveTime: timestampFromDate(row.last_active_time),
    idleExpireTime: timestampFromDate(row.idle_expire_time),
    expireTime: timestampFromDate(row.expire_time),
    current: row.id === currentSessionId,
  };
}

export function sessionHandlers(db: Database, sessions: Sessions): ServiceHandlers<typeof SessionService> {
  const revoke = async (call: CallContext, which: Parameters<Sessions["revoke"]>[1], owner: string) => {
    const principal = call.principal!;
    const reason = owner === principal.subject ? "revoked_by_user" : "revoked_by_admin";
    const revoked = await db.transaction(async (tx) => {
      const ids = await sessions.revoke(tx, which, reason);
      for (const sessionId of ids) {
        await audit(tx, call, { event: "session.revoke", outcome: "success", userId: owner, sessionId, detail: { by: principal.subject, reason } });
      }
      return ids;
    });
    await sessions.published(revoked);
    return revoked;
  };

  return {
    async getSession(_request, call) {
      const principal = call.principal!;
      const [row] = await db.query<SessionRow>(`select ${sessionColumns} from session where id = $1 and user_id = $2`, [
        principal.sessionId,
        principal.subject,
      ]);
      if (!row) throw new ConnectError("this session no longer exists", Code.Unauthenticated);
      return { session: sessionMessage(row, principal.sessionId) };
    },

    async listSessions(request, call) {
      const principal = call.principal!;
      const pageSize = pageSizeOf(request.pageSize);
      const after = request.pageToken ? decodePageToken(request.pageToken) : undefined;
      const rows = await db.query<SessionRow>(
        `select ${sessionColumns} from session
         where user_id = $1 and ${liveSession} and ($2::timestamptz is null or (create_time, id) < ($2, $3::uuid))
         order by create_time desc, id desc limit $4`,
        [principal.subject, after?.[0] ?? null, after?.[1] ?? null, pageSize + 1],
      );
      const page = rows.slice(0, pageSize);
      return {
        sessions: page.map((row) => sessionMessage(row, principal.sessionId)),
        nextPageToken: rows.length > pageSize ? encodePageToken(page.at(-1)!.create_time, page.at(-1)!.id) : "",
      };
    },

    async revokeSession(request, call) {
      const principal = call.principal!;
      if (!uuidPattern.test(request.sessionId)) throw invalidArgument([{ field: "session_id", description: "not a session id" }]);
      const [row] = await db.query<{ user_id: string }>("select user_id from session where id = $1", [request.sessionId]);
      const allowed = row && (row.user_id === principal.subject || principal.permissions.includes(sessionAdminPermission));
      // Another user's session answers like a missing one: ids are not to be probed.
      if (!allowed) throw new ConnectError("no such session", Code.NotFound);
      await revoke(call, { sessionIds: [request.sessionId] }, row.user_id);
      return {};
    },

    async revokeAllSessions(request, call) {
      const principal = call.principal!;
      const except = request.keepCurrent ? principal.sessionId : undefined;
      const revoked = await revoke(call, { userId: principal.subject, except }, principal.subject);
      return { revokedSessionCount: revoked.length };
    },
  };
}
