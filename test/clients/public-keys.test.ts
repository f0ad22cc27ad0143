import { generateKeyPairSync } from "node:crypto";
import { expect } from "chai";
import { calculateJwkThumbprint, exportJWK, generateKeyPair } from "jose";
import { readPublicJwk } from "../../services/clients/public-keys.js";

const publicJwkOf = async (alg: string, options: { crv?: string; modulusLength?: number } = {}) =>
  exportJWK((await generateKeyPair(alg, { ...options, extractable: true })).publicKey);
const privateJwkOf = async (alg: string) => exportJWK((await generateKeyPair(alg, { extractable: true })).privateKey);
const problemOf = async (text: string) => {
  const read = await readPublicJwk(text);
  return "problem" in read ? read.problem : undefined;
};

describe("service account public keys", () => {
  it("takes EC P-256, RSA of 2048 bits and Ed25519 public keys, named by their RFC 7638 thumbprint", async () => {
    for (const jwk of [await publicJwkOf("ES256"), await publicJwkOf("RS256", { modulusLength: 2048 }), await publicJwkOf("EdDSA", { crv: "Ed25519" })]) {
      const read = await readPublicJwk(JSON.stringify({ ...jwk, alg: "whatever", use: "sig", kid: "mine" }));
      expect(read).to.deep.equal({ jwk, keyId: await calculateJwkThumbprint(jwk) });
    }
  });

  it("refuses a private key, whatever its kind, and a symmetric one", async () => {
    for (const jwk of [await privateJwkOf("ES256"), await privateJwkOf("RS256"), await privateJwkOf("EdDSA"), { kty: "oct", k: "c2VjcmV0" }]) {
      expect(await problemOf(JSON.stringify(jwk))).to.match(/private or symmetric/);
    }
  });

  it("refuses other curves, short RSA moduli, other key types, broken keys and what is not a JWK", async () => {
    expect(await problemOf(JSON.stringify(await publicJwkOf("ES384")))).to.match(/P-256/);
    // jose will not make a key this short.
    const shortRsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" });
    expect(await problemOf(JSON.stringify(shortRsa))).to.match(/2048 bits/);
    expect(await problemOf(JSON.stringify({ kty: "OKP", crv: "X25519", x: "AAAA" }))).to.match(/Ed25519/);
    expect(await problemOf(JSON.stringify({ kty: "XYZ" }))).to.match(/kty must be/);
    const ec = await publicJwkOf("ES256");
    expect(await problemOf(JSON.stringify({ ...ec, y: ec.x }))).to.equal("not a valid key");
    expect(await problemOf(JSON.stringify({ kty: "EC", crv: "P-256" }))).to.equal("not a valid key");
    expect(await problemOf("not json")).to.equal("not JSON");
    expect(await problemOf("[1]")).to.equal("not a JSON object");
  });
});
