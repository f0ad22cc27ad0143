import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from "@simplewebauthn/server";
import { invalidArgument } from "../kernel/errors.js";

/**
 * The browser's credential (PublicKeyCredential.toJSON()) as the request's
 * Struct carries it, checked for shape before any of it reaches the WebAuthn
 * library: a credential that is not even well formed is the caller's mistake
 * (INVALID_ARGUMENT on `credential`), not a failed ceremony. Only the fields
 * checked here are passed on: the extension outputs and the attachment are
 * hints the verifier does not read.
 */

const base64urlPattern = /^[A-Za-z0-9_-]+$/;
/** WebAuthn caps credential ids at 1023 bytes. */
const maxCredentialIdChars = Math.ceil((1023 * 4) / 3);
/** The 32-byte RP id hash, flags and the 4-byte counter. */
const minAuthenticatorDataBytes = 37;
const maxTransports = 8;
const maxTransportChars = 32;

class Malformed extends Error {}

const malformed = (path: string, problem: string): never => {
  throw new Malformed(`${path}: ${problem}`);
};

function object(value: JsonValue | undefined, path: string): JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return malformed(path, "must be an object");
  return value;
}

function base64url(value: JsonValue | undefined, path: string): string {
  // A length of 4n+1 characters decodes to no whole bytes: it is no encoding of anything.
  if (typeof value !== "string" || !base64urlPattern.test(value) || value.length % 4 === 1) return malformed(path, "must be base64url");
  return value;
}

/** Absent, null or empty: how the JSON forms say "none". */
function optionalBase64url(value: JsonValue | undefined, path: string): string | undefined {
  return value === undefined || value === null || value === "" ? undefined : base64url(value, path);
}

function credentialId(credential: JsonObject): string {
  const id = base64url(credential.id, "id");
  if (id.length > maxCredentialIdChars) malformed("id", "too long for a credential id");
  if (credential.rawId !== id) malformed("rawId", "must equal id");
  if (credential.type !== "public-key") malformed("type", 'must be "public-key"');
  return id;
}

/** clientDataJSON must at least be the JSON object WebAuthn describes; whether it matches the ceremony is the verifier's to say. */
function clientDataJSON(value: JsonValue | undefined): string {
  const encoded = base64url(value, "response.clientDataJSON");
  let clientData: unknown;
  try {
    clientData = JSON.parse(Buffer.from(encoded, "base64url").toString("utf8"));
  } catch {
    return malformed("response.clientDataJSON", "must be JSON");
  }
  const fields = clientData as Record<string, unknown>;
  if (typeof clientData !== "object" || clientData === null || ["type", "challenge", "origin"].some((key) => typeof fields[key] !== "string")) {
    malformed("response.clientDataJSON", "must hold type, challenge and origin");
  }
  return encoded;
}

function transports(value: JsonValue | undefined): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.length > maxTransports || value.some((t) => typeof t !== "string" || t.length === 0 || t.length > maxTransportChars)) {
    return malformed("response.transports", `must be at most ${maxTransports} short strings`);
  }
  return value as string[];
}

/** The parts both kinds of credential share. */
function common(credential: JsonObject) {
  const id = credentialId(credential);
  return { id, rawId: id, type: "public-key" as const, clientExtensionResults: {} };
}

function checked<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof Malformed) throw invalidArgument([{ field: "credential", description: error.message }]);
    throw error;
  }
}

/** A new credential for FinishPasskeyRegistration. */
export function registrationResponseOf(credential: JsonObject): RegistrationResponseJSON {
  return checked(() => {
    const shared = common(credential);
    const response = object(credential.response, "response");
    const authenticatorData = optionalBase64url(response.authenticatorData, "response.authenticatorData");
    const listed = transports(response.transports);
    return {
      ...shared,
      response: {
        clientDataJSON: clientDataJSON(response.clientDataJSON),
        attestationObject: base64url(response.attestationObject, "response.attestationObject"),
        ...(authenticatorData ? { authenticatorData } : {}),
        ...(listed ? { transports: listed } : {}),
      },
    };
  });
}

/** An assertion for FinishPasskeySignIn. */
export function authenticationResponseOf(credential: JsonObject): AuthenticationResponseJSON {
  return checked(() => {
    const shared = common(credential);
    const response = object(credential.response, "response");
    const authenticatorData = base64url(response.authenticatorData, "response.authenticatorData");
    if (Buffer.from(authenticatorData, "base64url").length < minAuthenticatorDataBytes) malformed("response.authenticatorData", "too short");
    const userHandle = optionalBase64url(response.userHandle, "response.userHandle");
    return {
      ...shared,
      response: {
        clientDataJSON: clientDataJSON(response.clientDataJSON),
        authenticatorData,
        signature: base64url(response.signature, "response.signature"),
        ...(userHandle ? { userHandle } : {}),
      },
    };
  });
}

/** Options as a Struct takes them: JSON, without the keys the library leaves undefined. */
export function optionsJson(options: object): JsonObject {
  return JSON.parse(JSON.stringify(options)) as JsonObject;
}
