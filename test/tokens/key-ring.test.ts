import { expect } from "chai";
import { createLocalJWKSet, jwtVerify } from "jose";
import { migrations } from "../../services/migrations/index.js";
import { Database } from "../../services/platform/database.js";
import { Envelope } from "../../services/platform/envelope.js";
import { createLogger } from "../../services/platform/logger.js";
import { AccessTokens } from "../../services/tokens/access-token.js";
import { KeyRing } from "../../services/tokens/key-ring.js";
import { createTestDatabase, dropTestDatabases, testKeyEncryptionKey } from "../support/stores.js";

const day = 86_400_000;
const policy = { rotationIntervalSeconds: 30 * 86_400, publishLeadSeconds: 3_600, verifyGraceSeconds: 905 };
const settings = { issuer: "portcullis", audience: "portcullis", ttlSeconds: 900, clockToleranceSeconds: 5, verifiedCacheSize: 100 };
const user = { kind: "user" as const, subject: "u1", sessionId: "s1", sessionExpiresAt: 0, deviceId: "d1", kycLevel: 0, kycStatus: "", permissions: [], amr: ["otp"] };

describe("The key ring", () => {
  let db: Database;
  let clock: number;
  let ring: KeyRing;
  const logger = createLogger("silent");
  const envelope = new Envelope(Buffer.from(testKeyEncryptionKey(), "base64"), "signing-keys");

  before(async () => {
    db = await Database.open(await createTestDatabase(), logger, { poolSize: 2, prepare: true }, migrations);
    clock = Date.parse("2026-01-01T00:00:00Z");
    ring = new KeyRing(db, envelope, "ES256", policy, logger, () => new Date(clock));
    await ring.rotate();
  });
  after(async () => {
    await db.close();
    await dropTestDatabases();
  });

  it("creates a signing key on first start and publishes it", async () => {
    const jwks = ring.jwks();
    expect(jwks).to.have.length(1);
    expect((await ring.signingKey()).kid).to.equal(jwks[0]!.kid);
  });

  it("keeps the private part sealed in Postgres, never in the public JWK", async () => {
    const [row] = await db.query<{ kid: string; public_jwk: { x: string }; sealed_private_jwk: string }>(
      "select kid, public_jwk, sealed_private_jwk from signing_key",
    );
    expect(row!.public_jwk).not.to.have.property("d");
    expect(row!.sealed_private_jwk).not.to.contain(row!.public_jwk.x);
    const opened = JSON.parse(envelope.open(row!.sealed_private_jwk, `signing_key:${row!.kid}`));
    expect(opened).to.have.property("d");
    expect(() => envelope.open(row!.sealed_private_jwk, "signing_key:another")).to.throw();
  });

  it("publishes the next key before it signs, then switches, then drops the old one once its tokens expired", async () => {
    const first = (await ring.signingKey()).kid;
    const tokens = new AccessTokens(ring, settings, () => clock);

    clock += 30 * day - 30 * 60_000; // inside the publish lead
    await ring.rotate();
    const published = ring.jwks().map((k) => k.kid);
    expect(published).to.have.length(2);
    const second = published.find((kid) => kid !== first)!;
    expect((await ring.signingKey()).kid, "published, not yet signing").to.equal(first);
    const oldToken = (await tokens.issue(user)).token;

    clock += 60 * 60_000; // past activation
    await ring.rotate();
    expect((await ring.signingKey()).kid).to.equal(second);
    const keySet = createLocalJWKSet({ keys: ring.jwks() });
    await jwtVerify(oldToken, keySet, { currentDate: new Date(clock - 60 * 60_000 + 60_000) });

    clock += 16 * 60_000; // the old key's last token has expired
    await ring.rotate();
    expect(ring.jwks().map((k) => k.kid)).to.deep.equal([second]);
  });

  it("lets a second instance verify tokens signed with a key it has not loaded yet", async () => {
    const other = new KeyRing(db, envelope, "ES256", policy, logger, () => new Date(clock));
    const token = (await new AccessTokens(ring, settings, () => clock).issue(user)).token;
    const principal = await new AccessTokens(other, settings, () => clock).verify(token);
    expect(principal.subject).to.equal("u1");
  });
});
