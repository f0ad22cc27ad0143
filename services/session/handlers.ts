import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { audit } from "../platform/audit.js";
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
    createTime: timestampFromDate(new Date(row.create_time)),
    lastActiveTime: timestampFromDate(new Date(row.last_active_time)),
    idleExpireTime: timestampFromDate(new Date(row.idle_expire_time)),
    expireTime: timestampFromDate(new Date(row.expire_time)),
    current: row.id === currentSessionId,
  };
}

export function sessionHandlers(orm: MikroORM, sessions: Sessions): ServiceHandlers<typeof SessionService> {
  const revoke = async (em: EntityManager, call: CallContext, which: Parameters<Sessions["revoke"]>[1], owner: string) => {
    const principal = call.principal!;
    const reason = owner === principal.subject ? "revoked_by_user" : "revoked_by_admin";
    const revoked = await em.transactional(async (tx) => {
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
      const [row] = await orm.em.fork().execute<SessionRow[]>("select * from session where id = ? and user_id = ?", [
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
      const rows = await orm.em.fork().execute<SessionRow[]>(
        `select * from session where user_id = ? and ${liveSession}
         ${after ? "and (create_time, id) < (?, ?)" : ""}
         order by create_time desc, id desc limit ?`,
        [principal.subject, ...(after ?? []), pageSize + 1],
      );
      const page = rows.slice(0, pageSize);
      return {
        sessions: page.map((row) => sessionMessage(row, principal.sessionId)),
        nextPageToken: rows.length > pageSize ? encodePageToken(new Date(page.at(-1)!.create_time), page.at(-1)!.id) : "",
      };
    },

    async revokeSession(request, call) {
      const principal = call.principal!;
      if (!uuidPattern.test(request.sessionId)) throw invalidArgument([{ field: "session_id", description: "not a session id" }]);
      const em = orm.em.fork();
      const [row] = await em.execute<{ user_id: string }[]>("select user_id from session where id = ?", [request.sessionId]);
      const allowed = row && (row.user_id === principal.subject || principal.permissions.includes(sessionAdminPermission));
      // Another user's session answers like a missing one: ids are not to be probed.
      if (!allowed) throw new ConnectError("no such session", Code.NotFound);
      await revoke(em, call, { sessionIds: [request.sessionId] }, row.user_id);
      return {};
    },

    async revokeAllSessions(request, call) {
      const principal = call.principal!;
      const except = request.keepCurrent ? principal.sessionId : undefined;
      const revoked = await revoke(orm.em.fork(), call, { userId: principal.subject, except }, principal.subject);
      return { revokedSessionCount: revoked.length };
    },
  };
}
