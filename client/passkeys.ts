import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  startAuthentication,
  startRegistration,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
} from "@simplewebauthn/browser";
import type { DeviceSchema } from "../gen/portcullis/v1/common_pb.js";
import type { FinishPasskeySignInResponse, Passkey, PasskeyService } from "../gen/portcullis/v1/passkey_service_pb.js";
import { PortcullisError } from "./errors.js";

/**
 * The two WebAuthn ceremonies, each Start → the browser's authenticator →
 * Finish. The browser's own refusals (the person cancelled, no authenticator)
 * reject with @simplewebauthn/browser's WebAuthnError, not a PortcullisError:
 * no call failed.
 */

/** `currentPassword`: the account's password, when it has one (the server wants more than a token to add a passkey). */
export async function registerPasskey(
  passkeys: Client<typeof PasskeyService>,
  { name = "", currentPassword = "" }: { name?: string; currentPassword?: string } = {},
): Promise<Passkey> {
  const { ceremonyId, options } = await passkeys.startPasskeyRegistration({ currentPassword });
  const credential = await startRegistration({ optionsJSON: optionsOf<PublicKeyCredentialCreationOptionsJSON>(options) });
  const { passkey } = await passkeys.finishPasskeyRegistration({ ceremonyId, credential: jsonOf(credential), name });
  if (!passkey) throw PortcullisError.from(new ConnectError("FinishPasskeyRegistration answered without the passkey", Code.Internal));
  return passkey;
}

/** The tokens of the new session are stored as for any sign-in. */
export async function signInWithPasskey(
  passkeys: Client<typeof PasskeyService>,
  device: MessageInitShape<typeof DeviceSchema>,
): Promise<FinishPasskeySignInResponse> {
  const { ceremonyId, options } = await passkeys.startPasskeySignIn({});
  const credential = await startAuthentication({ optionsJSON: optionsOf<PublicKeyCredentialRequestOptionsJSON>(options) });
  return passkeys.finishPasskeySignIn({ ceremonyId, credential: jsonOf(credential), device });
}

/** The Start answer's Struct is the WebAuthn `*OptionsJSON` the server built. */
function optionsOf<T>(options: JsonObject | undefined): T {
  if (!options) throw PortcullisError.from(new ConnectError("the ceremony came without its options", Code.Internal));
  return options as unknown as T;
}

/** The credential's toJSON() shape leaves optional members undefined, which a Struct cannot hold. */
function jsonOf(credential: object): JsonObject {
  return JSON.parse(JSON.stringify(credential)) as JsonObject;
}
