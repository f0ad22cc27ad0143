import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from "jose";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Code, ConnectError } from "../../services/kernel/errors.js";
import { createLogger } from "../../services/platform/logger.js";
import { TokenVerifier } from "../../services/tokens/access-token.js";
import { RemoteJwks } from "../../services/tokens/remote-jwks.js";

const settings = { issuer: "portcullis", audience: "portcullis", clockToleranceSeconds: 5, verifiedCacheSize: 0, maxLifetimeSeconds: 900 };

/** What verifying answered: accepted, an UNAUTHENTICATED reason, or the code of any other ConnectError. */
async function outcome(verifying: Promise<unknown>): Promise<string> {
  try {
    await verifying;
    return "accepted";
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    if (error.code !== Code.Unauthenticated) return Code[error.code];
    return error.findDetails(ErrorInfoSchema)[0]?.reason ?? "no reason";
  }
}

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function signingKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

function signed(key: SigningKey): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sid: "s1" })
    .setProtectedHeader({ alg: "ES256", kid: key.kid, typ: "at+jwt" })
    .setIssuer(settings.issuer)
    .setAudience(settings.audience)
    .setSubject("u1")
    .setJti(crypto.randomUUID())
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(key.privateKey);
}

/** Long enough that Date.now() moves past a max-age or cooldown of 0. */
const aMoment = () => new Promise((resolve) => setTimeout(resolve, 5));

describe("Remote JWKS", () => {
  const logger = createLogger("silent");
  let published: SigningKey;
  let unpublished: SigningKey;
  let server: Server;
  let url: string;
  /** What the JWKS server answers: the key set, or an HTTP error status. */
  let answer: "keys" | 500;

  before(async () => {
    published = await signingKey("published");
    unpublished = await signingKey("unpublished");
  });

  beforeEach(async () => {
    answer = "keys";
    server = createServer((_request, response) => {
      if (answer === "keys") response.setHeader("content-type", "application/json").end(JSON.stringify({ keys: [published.publicJwk] }));
      else response.writeHead(answer).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json?access_token=secret`;
  });
  afterEach(() => server.listening && takeDown());

  async function takeDown() {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }

  function verifier(options: { maxAgeMs: number; cooldownMs: number }) {
    return new TokenVerifier(new RemoteJwks(url, logger, options), settings);
  }

  it("verifies a token signed with a published key, and refuses a kid the key set does not have", async () => {
    const tokens = verifier({ maxAgeMs: 60_000, cooldownMs: 0 });
    expect(await outcome(tokens.verify(await signed(published)))).to.equal("accepted");
    await aMoment();
    expect(await outcome(tokens.verify(await signed(unpublished))), "fetched again, still not there").to.equal("TOKEN_INVALID");
  });

  it("keeps serving the keys it fetched while the JWKS is down, past their max age", async () => {
    const tokens = verifier({ maxAgeMs: 0, cooldownMs: 0 });
    expect(await outcome(tokens.verify(await signed(published)))).to.equal("accepted");
    await takeDown();
    await aMoment();
    expect(await outcome(tokens.verify(await signed(published))), "the refresh failed").to.equal("accepted");
    expect(await outcome(tokens.verify(await signed(unpublished))), "a kid it cannot check").to.equal("Unavailable");
  });

  it("answers UNAVAILABLE for a kid it cannot check, not TOKEN_INVALID, when the JWKS cannot be reached", async () => {
    const tokens = verifier({ maxAgeMs: 60_000, cooldownMs: 60_000 });
    await takeDown();
    expect(await outcome(tokens.verify(await signed(published))), "no keys at all").to.equal("Unavailable");
    expect(await outcome(tokens.verify(await signed(unpublished))), "within the cooldown").to.equal("Unavailable");
  });

  it("answers UNAVAILABLE when the JWKS answers an HTTP error", async () => {
    answer = 500;
    const tokens = verifier({ maxAgeMs: 60_000, cooldownMs: 0 });
    expect(await outcome(tokens.verify(await signed(published)))).to.equal("Unavailable");
    answer = "keys";
    await aMoment();
    expect(await outcome(tokens.verify(await signed(published))), "once it answers again").to.equal("accepted");
  });

  it("logs where the failed JWKS is and why, without the URL's query", async () => {
    const lines: string[] = [];
    const capturing = createLogger("warn", { write: (line: string) => lines.push(line) });
    const jwks = new RemoteJwks(url, capturing);
    answer = 500;
    expect(await outcome(jwks.refresh())).to.equal("Unavailable");
    expect(lines).to.have.length(1);
    const logged = JSON.parse(lines[0]!);
    expect(logged).to.include({ level: "warn", failure: "http_status", detail: 500, jwks: url.split("?")[0] });
    expect(lines[0]).not.to.include("secret");
  });
});
