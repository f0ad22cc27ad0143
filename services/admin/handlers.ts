import type { ServiceHandlers } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import { AdminService } from "../../gen/portcullis/v1/admin_service_pb.js";

const notYet = async (): Promise<never> => {
  throw new ConnectError("not built yet", Code.Unimplemented);
};

export function adminHandlers(): ServiceHandlers<typeof AdminService> {
  return {
    listUsers: notYet,
    getUser: notYet,
    disableUser: notYet,
    enableUser: notYet,
    unlockUser: notYet,
    grantPermission: notYet,
    revokePermission: notYet,
    listAuditEvents: notYet,
  };
}
