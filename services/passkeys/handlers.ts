import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "../kernel/call.js";
import { PasskeyService, type PasskeySchema } from "../../gen/portcullis/v1/passkey_service_pb.js";
import type { Passkeys } from "./passkeys.js";
import type { PasskeyRegistration } from "./registration.js";
import type { PasskeySignIn } from "./sign-in.js";
import type { PasskeyRow } from "./store.js";

export interface PasskeyDeps {
  registration: PasskeyRegistration;
  signIn: PasskeySignIn;
  passkeys: Passkeys;
}

function passkeyMessage(row: PasskeyRow): MessageInitShape<typeof PasskeySchema> {
  return {
    id: row.id,
    name: row.name,
    credentialId: row.credential_id,
    synced: row.backup_eligible,
    createTime: timestampFromDate(row.create_time),
    lastUseTime: row.last_use_time ? timestampFromDate(row.last_use_time) : undefined,
  };
}

// The contract requires credential and device, and the chain has checked that they are there.
export function passkeyHandlers(deps: PasskeyDeps): ServiceHandlers<typeof PasskeyService> {
  return {
    startPasskeyRegistration: (request, call) => deps.registration.start(call.principal!, request.currentPassword, call),

    async finishPasskeyRegistration(request, call) {
      const { ceremonyId, credential, name } = request;
      return { passkey: passkeyMessage(await deps.registration.finish(call.principal!.subject, { ceremonyId, credential: credential!, name }, call)) };
    },

    startPasskeySignIn: () => deps.signIn.start(),

    finishPasskeySignIn: (request, call) =>
      deps.signIn.finish({ ceremonyId: request.ceremonyId, credential: request.credential!, device: request.device! }, call),

    async listPasskeys(_request, call) {
      return { passkeys: (await deps.passkeys.list(call.principal!.subject)).map(passkeyMessage) };
    },

    async renamePasskey(request, call) {
      return { passkey: passkeyMessage(await deps.passkeys.rename(call.principal!.subject, request.passkeyId, request.name, call)) };
    },

    async deletePasskey(request, call) {
      await deps.passkeys.delete(call.principal!.subject, request.passkeyId, call);
      return {};
    },
  };
}
