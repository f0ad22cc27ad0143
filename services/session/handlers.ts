import type { ServiceHandlers } from "../policy/call.js";
import { unimplemented } from "../platform/errors.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";

const sessions = "device sessions come with issue #4";

export function sessionHandlers(): ServiceHandlers<typeof SessionService> {
  return {
    getSession: async () => { throw unimplemented("GetSession", sessions); },
    listSessions: async () => { throw unimplemented("ListSessions", sessions); },
    revokeSession: async () => { throw unimplemented("RevokeSession", sessions); },
    revokeAllSessions: async () => { throw unimplemented("RevokeAllSessions", sessions); },
  };
}
