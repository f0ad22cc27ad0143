import { calculateJwkThumbprint, importJWK, type JWK } from "jose";

/** JWK members that hold a private or symmetric key: a service hands us only its public half. */
const privateMembers = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

const minRsaModulusBits = 2048;

/**
 * The signature algorithms a key's assertions may use, from the key itself and
 * never from the assertion's header (which an attacker writes).
 */
export function algorithmsFor(jwk: JWK): string[] {
  if (jwk.kty === "EC") return ["ES256"];
  if (jwk.kty === "RSA") return ["RS256", "PS256"];
  return ["EdDSA", "Ed25519"];
}

/** The members that make up each kind of key we take; anything else (alg, use, kid…) is dropped, as the thumbprint ignores it too. */
function publicMembers(jwk: Record<string, unknown>): JWK | string {
  if (jwk.kty === "EC") {
    if (jwk.crv !== "P-256") return "an EC key must be on curve P-256";
    return { kty: "EC", crv: "P-256", x: jwk.x as string, y: jwk.y as string };
  }
  if (jwk.kty === "RSA") {
    if (typeof jwk.n !== "string" || modulusBits(jwk.n) < minRsaModulusBits) return `an RSA key needs a modulus of at least ${minRsaModulusBits} bits`;
    return { kty: "RSA", n: jwk.n, e: jwk.e as string };
  }
  if (jwk.kty === "OKP") {
    if (jwk.crv !== "Ed25519") return "an OKP key must be Ed25519";
    return { kty: "OKP", crv: "Ed25519", x: jwk.x as string };
  }
  return "kty must be EC (P-256), RSA or OKP (Ed25519)";
}

function modulusBits(n: string): number {
  const bytes = Buffer.from(n, "base64url");
  const first = bytes.findIndex((byte) => byte !== 0);
  return first < 0 ? 0 : (bytes.length - first - 1) * 8 + bytes[first]!.toString(2).length;
}

/**
 * A public JWK as JSON, checked: only public members, a kind and size we
 * accept, and a key that imports. Returns the key as we keep it and its
 * RFC 7638 thumbprint, or what is wrong with it.
 */
export async function readPublicJwk(text: string): Promise<{ jwk: JWK; keyId: string } | { problem: string }> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { problem: "not JSON" };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return { problem: "not a JSON object" };
  const given = parsed as Record<string, unknown>;
  if (privateMembers.some((member) => member in given)) return { problem: "holds a private or symmetric key; give only the public key" };
  const jwk = publicMembers(given);
  if (typeof jwk === "string") return { problem: jwk };
  try {
    await importJWK(jwk, algorithmsFor(jwk)[0]);
  } catch {
    return { problem: "not a valid key" };
  }
  return { jwk, keyId: await calculateJwkThumbprint(jwk) };
}
