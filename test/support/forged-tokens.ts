import { createPublicKey } from "node:crypto";
import { SignJWT, UnsecuredJWT, exportSPKI, generateKeyPair, type CryptoKey } from "jose";
import { AccessTokens } from "../../services/tokens/access-token.js";
import type { App } from "../../services/app/app.js";

const subject = {
  kind: "user" as const,
  subject: "11111111-1111-4111-8111-111111111111",
  sessionId: "22222222-2222-4222-8222-222222222222",
  sessionExpiresAt: 0,
  deviceId: "d",
  kycLevel: 3,
  kycStatus: "",
  permissions: ["kyc.review"],
  amr: ["otp"],
};

function claims(audience = "portcullis") {
  const now = Math.floor(Date.now() / 1000);
  return { iss: "portcullis", aud: audience, sub: subject.subject, sid: subject.sessionId, iat: now, nbf: now, exp: now + 600, jti: crypto.randomUUID(), kyc_lvl: 3, perm: ["kyc.review"] };
}

/** Tokens an attacker or a clock could produce; every one must be refused. */
export async function forgedTokens(app: App): Promise<Record<string, string>> {
  const { kid, key } = await app.keyRing.signingKey();
  const good = (await app.tokens.issue(subject)).token;
  const [header, payload, signature] = good.split(".") as [string, string, string];
  const tamperedPayload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, "base64url").toString()), kyc_lvl: 99 }))
    .toString("base64url");
  const publicJwk = app.keyRing.jwks()[0]!;
  const publicPem = await exportSPKI(createPublicKey({ key: publicJwk as never, format: "jwk" }) as unknown as CryptoKey);
  const stranger = await generateKeyPair("ES256");
  const expiredTokens = new AccessTokens(app.keyRing, { issuer: "portcullis", audience: "portcullis", ttlSeconds: 60, clockToleranceSeconds: 0, verifiedCacheSize: 0 }, () => Date.now() - 3_600_000);

  return {
    expired: (await expiredTokens.issue(subject)).token,
    tampered: `${header}.${tamperedPayload}.${signature}`,
    "alg none": new UnsecuredJWT(claims()).encode(),
    "HS256 signed with the public key": await new SignJWT(claims())
      .setProtectedHeader({ alg: "HS256", kid, typ: "at+jwt" })
      .sign(new TextEncoder().encode(publicPem)),
    "unknown kid": await new SignJWT(claims()).setProtectedHeader({ alg: "ES256", kid: "not-ours", typ: "at+jwt" }).sign(stranger.privateKey),
    "our kid, a stranger's key": await new SignJWT(claims()).setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" }).sign(stranger.privateKey),
    "wrong audience": await new SignJWT(claims("someone-else")).setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" }).sign(key),
    "not typ at+jwt": await new SignJWT(claims()).setProtectedHeader({ alg: "ES256", kid, typ: "JWT" }).sign(key),
    "not a JWT": "abc.def.ghi",
  };
}

