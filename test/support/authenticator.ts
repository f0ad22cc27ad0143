import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import type { JsonObject } from "@bufbuild/protobuf";

/**
 * A software passkey authenticator: what a browser and a platform
 * authenticator together hand a web page, for tests. It makes ES256 keys,
 * answers creation options with a "none" attestation and request options with
 * signed assertions, and lets a test bend what a real one would not (origin,
 * relying party, user verification, the signature counter).
 */

/** How one ceremony goes; every field defaults to what an honest authenticator on the right page does. */
interface Ceremony {
  /** The page's origin, as the browser writes it into clientDataJSON. */
  origin?: string;
  /** The relying party whose id is hashed into authenticatorData. */
  rpId?: string;
  /** Whether the user was verified (PIN, biometric): the UV flag. */
  userVerified?: boolean;
  /** The signature counter to report (and keep); by default one more than last time, or 0 for an authenticator that counts no uses. */
  counter?: number;
}

type RegistrationJSON = {
  id: string;
  rawId: string;
  type: "public-key";
  authenticatorAttachment: "platform";
  clientExtensionResults: { credProps: { rk: boolean } };
  response: { clientDataJSON: string; attestationObject: string; transports: string[] };
};

type AssertionJSON = {
  id: string;
  rawId: string;
  type: "public-key";
  authenticatorAttachment: "platform";
  clientExtensionResults: Record<string, never>;
  response: { clientDataJSON: string; authenticatorData: string; signature: string; userHandle: string };
};

interface StoredCredential {
  id: Buffer;
  key: KeyObject;
  cose: Buffer;
  /** base64url, as the creation options gave it. */
  userHandle: string;
  counter: number;
}

const flags = { up: 0x01, uv: 0x04, be: 0x08, bs: 0x10, at: 0x40 };

export class SoftAuthenticator {
  private readonly credentials: StoredCredential[] = [];

  constructor(
    private readonly defaults: { origin: string; rpId: string; countsUses?: boolean; synced?: boolean } = {
      origin: "http://localhost:8080",
      rpId: "localhost",
    },
  ) {}

  /** navigator.credentials.create(): a new discoverable credential, unless the options exclude one this authenticator holds. */
  create(options: JsonObject, ceremony: Ceremony & { reuse?: string } = {}): RegistrationJSON {
    const excluded = ((options.excludeCredentials ?? []) as { id: string }[]).map((c) => c.id);
    if (!ceremony.reuse && excluded.some((id) => this.byId(id))) throw new Error("InvalidStateError: this authenticator holds an excluded credential");
    const credential = this.byId(ceremony.reuse) ?? this.newCredential((options.user as JsonObject).id as string);
    const counter = this.nextCounter(credential, ceremony.counter);
    const clientDataJSON = this.clientData("webauthn.create", options.challenge as string, ceremony);
    const attestedCredential = Buffer.concat([Buffer.alloc(16), uint16(credential.id.length), credential.id, credential.cose]);
    const authData = Buffer.concat([this.authDataHead(ceremony, flags.at, counter), attestedCredential]);
    const attestationObject = cbor(new Map<string, Cbor>([["fmt", "none"], ["attStmt", new Map()], ["authData", authData]]));
    return {
      ...named(credential),
      clientExtensionResults: { credProps: { rk: true } },
      response: { clientDataJSON: clientDataJSON.toString("base64url"), attestationObject: attestationObject.toString("base64url"), transports: ["internal", "hybrid"] },
    };
  }

  /** navigator.credentials.get(): an assertion by `credentialId`, or by the newest credential the options allow. */
  get(options: JsonObject, ceremony: Ceremony & { credentialId?: string } = {}): AssertionJSON {
    const allowed = ((options.allowCredentials ?? []) as { id: string }[]).map((c) => c.id);
    const wanted = ceremony.credentialId ?? allowed.find((id) => this.byId(id));
    const credential = wanted ? this.byId(wanted) : this.credentials.at(-1);
    if (!credential) throw new Error("NotAllowedError: no credential for these options");
    const counter = this.nextCounter(credential, ceremony.counter);
    const clientDataJSON = this.clientData("webauthn.get", options.challenge as string, ceremony);
    const authData = this.authDataHead(ceremony, 0, counter);
    const signed = Buffer.concat([authData, createHash("sha256").update(clientDataJSON).digest()]);
    return {
      ...named(credential),
      clientExtensionResults: {},
      response: {
        clientDataJSON: clientDataJSON.toString("base64url"),
        authenticatorData: authData.toString("base64url"),
        // ES256 signatures in WebAuthn are DER, as node:crypto makes them.
        signature: sign("sha256", signed, credential.key).toString("base64url"),
        userHandle: credential.userHandle,
      },
    };
  }

  private byId(id: string | undefined): StoredCredential | undefined {
    return id === undefined ? undefined : this.credentials.find((c) => c.id.toString("base64url") === id);
  }

  private newCredential(userHandle: string): StoredCredential {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = publicKey.export({ format: "jwk" });
    const cose = cbor(new Map<number, Cbor>([
      [1, 2], // kty: EC2
      [3, -7], // alg: ES256
      [-1, 1], // crv: P-256
      [-2, Buffer.from(jwk.x!, "base64url")],
      [-3, Buffer.from(jwk.y!, "base64url")],
    ]));
    const credential = { id: randomBytes(32), key: privateKey, cose, userHandle, counter: 0 };
    this.credentials.push(credential);
    return credential;
  }

  private nextCounter(credential: StoredCredential, asked: number | undefined): number {
    credential.counter = asked ?? (this.defaults.countsUses === false ? 0 : credential.counter + 1);
    return credential.counter;
  }

  private clientData(type: string, challenge: string, ceremony: Ceremony): Buffer {
    return Buffer.from(JSON.stringify({ type, challenge, origin: ceremony.origin ?? this.defaults.origin, crossOrigin: false }));
  }

  /** rpIdHash, flags and counter: the 37 bytes every authenticatorData starts with. */
  private authDataHead(ceremony: Ceremony, extraFlags: number, counter: number): Buffer {
    const rpIdHash = createHash("sha256").update(ceremony.rpId ?? this.defaults.rpId).digest();
    let flagByte = flags.up | extraFlags;
    if (ceremony.userVerified ?? true) flagByte |= flags.uv;
    if (this.defaults.synced) flagByte |= flags.be | flags.bs;
    const count = Buffer.alloc(4);
    count.writeUInt32BE(counter);
    return Buffer.concat([rpIdHash, Buffer.from([flagByte]), count]);
  }
}

/** What every PublicKeyCredential.toJSON() of this authenticator starts with. */
function named(credential: StoredCredential) {
  const id = credential.id.toString("base64url");
  return { id, rawId: id, type: "public-key" as const, authenticatorAttachment: "platform" as const };
}

/** The few CBOR shapes WebAuthn needs here: integers, text, bytes and maps. */
type Cbor = number | string | Uint8Array | Map<number | string, Cbor>;

function cbor(value: Cbor): Buffer {
  if (typeof value === "number") return value >= 0 ? head(0, value) : head(1, -1 - value);
  if (typeof value === "string") {
    const text = Buffer.from(value, "utf8");
    return Buffer.concat([head(3, text.length), text]);
  }
  if (value instanceof Uint8Array) return Buffer.concat([head(2, value.length), value]);
  return Buffer.concat([head(5, value.size), ...[...value].flatMap(([key, item]) => [cbor(key), cbor(item)])]);
}

function head(major: number, length: number): Buffer {
  if (length < 24) return Buffer.from([(major << 5) | length]);
  if (length < 0x100) return Buffer.from([(major << 5) | 24, length]);
  if (length < 0x10000) return Buffer.concat([Buffer.from([(major << 5) | 25]), uint16(length)]);
  const four = Buffer.alloc(5);
  four[0] = (major << 5) | 26;
  four.writeUInt32BE(length, 1);
  return four;
}

function uint16(n: number): Buffer {
  const two = Buffer.alloc(2);
  two.writeUInt16BE(n);
  return two;
}
