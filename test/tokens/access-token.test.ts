import { expect } from "chai";
import { SignJWT, jwtVerify, type JWTPayload } from "jose";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Code, ConnectError } from "../../services/kernel/errors.js";
import { migrations } from "../../services/migrations/index.js";
import { Database } from "../../services/platform/database.js";
import { Envelope } from "../../services/platform/envelope.js";
import { createLogger } from "../../services/platform/logger.js";
import { AccessTokens, TokenVerifier } from "../../services/tokens/access-token.js";
import { KeyRing } from "../../services/tokens/key-ring.js";
import { createTestDatabase, dropTestDatabases, testKeyEncryptionKey } from "../support/stores.js";

const hour = 3_600;
const day = 24 * hour;
const settings = { issuer: "portcullis", audience: "portcullis", ttlSeconds: 900, clockToleranceSeconds: 5, verifiedCacheSize: 100 };
const user = { kind: "user" as const, subject: "u1", sessionId: "s1", sessionExpiresAt: 0, deviceId: "d1", kycLevel: 0, kycStatus: "", permissions: [], amr: ["otp"] };

/** The reason an UNAUTHENTICATED refusal gives, or what else happened. */
async function refusal(verifying: Promise<unknown>): Promise<string> {
  try {
    await verifying;
    return "accepted";
  } catch (error) {
    if (!(error instanceof ConnectError) || error.code !== Code.Unauthenticated) throw error;
    return error.findDetails(ErrorInfoSchema)[0]?.reason ?? "no reason";
  }
}

describe("Access token verification", () => {
  let db: Database;
  let ring: KeyRing;
  let tokens: AccessTokens;
  /** Read as each test starts: the suite may reach this file minutes after loading it. */
  let now: number;
  beforeEach(() => (now = Math.floor(Date.now() / 1000)));

  /** A token signed with our own signing key, so only the claims' times can make it wrong. */
  async function signed(times: { iat: number; exp: number }): Promise<string> {
    const { kid, algorithm, key } = await ring.signingKey();
    const claims: JWTPayload = { iss: "portcullis", aud: "portcullis", sub: "u1", sid: "s1", jti: crypto.randomUUID(), ...times };
    return new SignJWT(claims).setProtectedHeader({ alg: algorithm, kid, typ: "at+jwt" }).sign(key);
  }

  before(async () => {
    const logger = createLogger("silent");
    db = await Database.open(await createTestDatabase(), logger, { poolSize: 2, prepare: true }, migrations);
    const envelope = new Envelope(Buffer.from(testKeyEncryptionKey(), "base64"), "signing-keys");
    ring = new KeyRing(db, envelope, "ES256", { rotationIntervalSeconds: 30 * day, publishLeadSeconds: hour, verifyGraceSeconds: 905 }, logger);
    await ring.rotate();
    tokens = new AccessTokens(ring, settings);
  });
  after(async () => {
    await db.close();
    await dropTestDatabases();
  });

  it("refuses a token issued in the future beyond the clock tolerance", async () => {
    expect(await refusal(tokens.verify(await signed({ iat: now + 4, exp: now + 600 }))), "within the tolerance").to.equal("accepted");
    expect(await refusal(tokens.verify(await signed({ iat: now + 60, exp: now + 600 })))).to.equal("TOKEN_INVALID");
  });

  it("refuses a token that lives longer than the tokens Portcullis issues", async () => {
    expect(await refusal(tokens.verify((await tokens.issue(user)).token)), "one it issued").to.equal("accepted");
    expect(await refusal(tokens.verify(await signed({ iat: now, exp: now + 900 + 5 }))), "within the tolerance").to.equal("accepted");
    expect(await refusal(tokens.verify(await signed({ iat: now - 60, exp: now + 900 })))).to.equal("TOKEN_INVALID");
    expect(await refusal(tokens.verify(await signed({ iat: now, exp: now + day })))).to.equal("TOKEN_INVALID");
  });

  it("gives a verifier that does not issue a maximum lifetime of its own", async () => {
    const guard = new TokenVerifier(ring, { ...settings, maxLifetimeSeconds: day });
    expect(await refusal(guard.verify(await signed({ iat: now, exp: now + hour })))).to.equal("accepted");
    expect(await refusal(guard.verify(await signed({ iat: now - 1, exp: now + day + 60 })))).to.equal("TOKEN_INVALID");
    expect(await refusal(guard.verify(await signed({ iat: now + 60, exp: now + hour })))).to.equal("TOKEN_INVALID");
  });

  it("refuses every other base64url spelling of a valid signature, before and after the token is cached", async () => {
    const token = (await tokens.issue(user)).token;
    const last = token.at(-1)!;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // An ES256 signature is 64 bytes: 86 characters, the last carrying 4 bits nobody reads.
    const respelled = `${token.slice(0, -1)}${alphabet[alphabet.indexOf(last) ^ 1]}`;
    const { kid } = await ring.signingKey();
    // The same signature bytes: jose alone accepts it.
    await jwtVerify(respelled, (await ring.verificationKey(kid))!.key);

    expect(await refusal(tokens.verify(respelled)), "before").to.equal("TOKEN_INVALID");
    expect(await refusal(tokens.verify(token))).to.equal("accepted");
    expect(await refusal(tokens.verify(respelled)), "after").to.equal("TOKEN_INVALID");
  });
});
