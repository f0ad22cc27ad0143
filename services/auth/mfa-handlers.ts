import type { ServiceHandlers } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import { MfaService } from "../../gen/portcullis/v1/mfa_service_pb.js";

const notYet = async (): Promise<never> => {
  throw new ConnectError("not built yet", Code.Unimplemented);
};

export function mfaHandlers(): ServiceHandlers<typeof MfaService> {
  return {
    enrollTotp: notYet,
    confirmTotp: notYet,
    disableTotp: notYet,
    regenerateRecoveryCodes: notYet,
    verifyMfa: notYet,
    stepUp: notYet,
  };
}
