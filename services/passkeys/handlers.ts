import { Code, ConnectError } from "../kernel/errors.js";
import type { ServiceHandlers } from "../kernel/call.js";
import { PasskeyService } from "../../gen/portcullis/v1/passkey_service_pb.js";

const notYet = () => {
  throw new ConnectError("passkeys are not implemented yet", Code.Unimplemented);
};

export function passkeyHandlers(): ServiceHandlers<typeof PasskeyService> {
  return {
    startPasskeyRegistration: notYet,
    finishPasskeyRegistration: notYet,
    startPasskeySignIn: notYet,
    finishPasskeySignIn: notYet,
    listPasskeys: notYet,
    renamePasskey: notYet,
    deletePasskey: notYet,
  };
}
