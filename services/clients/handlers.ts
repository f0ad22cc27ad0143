import type { ServiceHandlers } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";

const notYet = async (): Promise<never> => {
  throw new ConnectError("not built yet", Code.Unimplemented);
};

export function tokenHandlers(): ServiceHandlers<typeof TokenService> {
  return {
    issueServiceToken: notYet,
    exchangeToken: notYet,
    introspectToken: notYet,
  };
}
