import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "../kernel/call.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "../kernel/pagination.js";
import { DeviceType, SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import { SessionService, type SessionSchema } from "../../gen/portcullis/v1/session_service_pb.js";
import type { Sessions } from "./sessions.js";
import type { SessionRow } from "./store.js";

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

export function sessionHandlers(sessions: Sessions): ServiceHandlers<typeof SessionService> {
  return {
    async getSession(_request, call) {
      const principal = call.principal!;
      return { session: sessionMessage(await sessions.current(principal), principal.sessionId) };
    },

    async listSessions(request, call) {
      const principal = call.principal!;
      const pageSize = pageSizeOf(request.pageSize);
      const after = request.pageToken ? decodePageToken(request.pageToken) : undefined;
      const { page, next } = await sessions.list(principal.subject, pageSize, after);
      return {
        sessions: page.map((row) => sessionMessage(row, principal.sessionId)),
        nextPageToken: next ? encodePageToken(...next) : "",
      };
    },

    async revokeSession(request, call) {
      await sessions.revokeOne(call.principal!, request.sessionId, call);
      return {};
    },

    async revokeAllSessions(request, call) {
      const revoked = await sessions.revokeAll(call.principal!, request.keepCurrent, call);
      return { revokedSessionCount: revoked.length };
    },
  };
}
