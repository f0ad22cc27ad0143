import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "chai";
import { webAppFiles } from "../../gateway/web-app.js";
import { platformForSuite } from "../support/suite-platform.js";

const appPolicy =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

describe("The sign-in web app on the gateway", function () {
  this.timeout(90_000);
  const platform = platformForSuite({ env: { WEB_APP: "on" }, logs: true });
  const get = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${platform.running.httpPort}${path}`, init);

  it("answers / with the page, its API at the same origin, under a CSP with no inline script or style", async () => {
    const response = await get("/");
    expect(response.status).to.equal(200);
    expect(response.headers.get("content-type")).to.equal("text/html; charset=utf-8");
    expect(response.headers.get("content-security-policy")).to.equal(appPolicy);
    expect(response.headers.get("cache-control")).to.equal("no-cache");
    expect(response.headers.get("etag")).to.match(/^"[\w-]+"$/);
    expect(response.headers.get("x-frame-options")).to.equal("DENY");
    const html = await response.text();
    expect(html).to.include('<meta name="portcullis-api" content="">');
    expect(html).to.include('<script type="module" src="/app.js"></script>');
    expect(html).to.include('<link rel="stylesheet" href="/app.css">');
    expect(html).not.to.match(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.to.match(/<style|\sstyle=|\son[a-z]+=/i);
  });

  it("has every element the app's scripts and browser tests look for", async () => {
    const html = await (await get("/")).text();
    // Every id the scripts name (a missing one throws only when its form is used), and the forms' submit buttons,
    // which no script names, for browser tests to click.
    const ids = new Set(["send-code", "verify-code", "sign-in-password", "verify-mfa", "save-profile", "submit-kyc", "add-passkey"]);
    const scripts = readdirSync("web").filter((name) => name.endsWith(".ts")).map((name) => readFileSync(join("web", name), "utf8")).join("\n");
    const named = [...scripts.matchAll(/\b(?:element(?:<\w+>)?|inputValue|onSubmit)\("([\w-]+)"/g)].map((match) => match[1]!);
    const screens = [.../const screens = \[([^\]]*)\]/.exec(scripts)![1]!.matchAll(/"([\w-]+)"/g)].map((match) => match[1]!);
    expect(named, "ids found in web/*.ts").to.have.length.greaterThan(40);
    expect(screens).to.include.members(["loading", "sign-in", "account", "verify-email", "reset-password"]);
    for (const id of [...named, ...screens]) ids.add(id);
    for (const id of ids) expect(html, id).to.include(`id="${id}"`);
    expect(html).to.include('id="message" role="status"');
    expect(html).to.include('id="error" role="alert"');
  });

  it("serves the app's own routes, which mails link to, as the page", async () => {
    const page = await (await get("/")).text();
    for (const path of ["/verify-email", "/reset-password"]) {
      const response = await get(`${path}?x=1`);
      expect(response.status, path).to.equal(200);
      expect(await response.text(), path).to.equal(page);
    }
  });

  it("serves the bundle and the styles as JavaScript and CSS", async () => {
    const script = await get("/app.js");
    expect(script.status).to.equal(200);
    expect(script.headers.get("content-type")).to.equal("text/javascript; charset=utf-8");
    expect(script.headers.get("content-security-policy")).to.equal(appPolicy);
    const bundle = await script.text();
    // Bundled: no import is left for the browser to resolve.
    expect(bundle).not.to.match(/\bimport\s*[{"'*]|\bfrom\s*["']/);
    expect(bundle).to.include("portcullis-api");

    const styles = await get("/app.css");
    expect(styles.status).to.equal(200);
    expect(styles.headers.get("content-type")).to.equal("text/css; charset=utf-8");
    expect(await styles.text()).to.include("[hidden]");
  });

  it("answers a request with the current ETag with 304 keeping the app's CSP (a browser adopts a 304's headers), and HEAD with the headers alone", async () => {
    const first = await get("/");
    const etag = first.headers.get("etag")!;
    const revalidated = await get("/", { headers: { "If-None-Match": etag } });
    expect(revalidated.status).to.equal(304);
    expect(revalidated.headers.get("content-security-policy")).to.equal(appPolicy);
    expect(await revalidated.text()).to.equal("");

    const head = await get("/", { method: "HEAD" });
    expect(head.status).to.equal(200);
    expect(head.headers.get("content-type")).to.equal("text/html; charset=utf-8");
    expect(Number(head.headers.get("content-length"))).to.be.greaterThan(1000);
    expect(head.headers.get("content-security-policy")).to.equal(appPolicy);
    expect(await head.text()).to.equal("");
  });

  it("still answers 404 for paths that are neither the app's nor the API's", async () => {
    for (const path of ["/index.html", "/app.js.map", "/verify-email/x", "/web/main.ts"]) {
      expect((await get(path)).status, path).to.equal(404);
    }
    expect((await get("/", { method: "POST" })).status).to.equal(404);
  });

  it("keeps the API's routes and their strict CSP", async () => {
    const health = await get("/healthz");
    expect(health.status).to.equal(200);
    expect(health.headers.get("content-security-policy")).to.equal("default-src 'none'; frame-ancestors 'none'");
    expect((await get("/readyz")).status).to.equal(200);
    expect((await get("/.well-known/jwks.json")).status).to.equal(200);

    const rpc = await get("/portcullis.v1.AuthService/GetJwks", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    expect(rpc.status).to.equal(200);
    expect(((await rpc.json()) as { keys: unknown[] }).keys).to.have.length.greaterThan(0);
    expect(rpc.headers.get("content-security-policy")).to.equal("default-src 'none'; frame-ancestors 'none'");
    const unauthenticated = await get("/portcullis.v1.SessionService/GetSession", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    expect(unauthenticated.status).to.equal(401);
  });

  it("logs where the app is, and that passkeys need APP_URL when it is not the app's origin", () => {
    const line = platform.logLines.map((l) => JSON.parse(l) as { msg: string; url?: string }).find((l) => l.msg.startsWith("web app at"));
    const origin = `http://localhost:${platform.running.httpPort}`;
    expect(line?.url).to.equal(`${origin}/`);
    expect(line?.msg).to.equal(`web app at ${origin}/; passkeys need APP_URL (or WEBAUTHN_ORIGINS) set to ${origin}`);
  });

  it("renders the files for an API at another origin, which alone it may call besides its own", async () => {
    const files = await webAppFiles({ apiBaseUrl: "http://127.0.0.1:9443/" });
    expect(files.get("/")!.body.toString()).to.include('<meta name="portcullis-api" content="http://127.0.0.1:9443/">');
    for (const file of files.values()) {
      expect(file.headers["Content-Security-Policy"]).to.equal(appPolicy.replace("connect-src 'self'", "connect-src 'self' http://127.0.0.1:9443"));
    }
    expect(files.get("/app.js")!.headers.ETag).to.equal((await get("/app.js")).headers.get("etag"));
  });
});

describe("The gateway with the web app off", function () {
  this.timeout(90_000);
  const platform = platformForSuite({ env: { WEB_APP: "off" } });

  it("answers / and the app's files with 404, as before the app", async () => {
    for (const path of ["/", "/app.js", "/app.css", "/verify-email"]) {
      expect((await fetch(`http://127.0.0.1:${platform.running.httpPort}${path}`)).status, path).to.equal(404);
    }
    expect((await fetch(`http://127.0.0.1:${platform.running.httpPort}/healthz`)).status).to.equal(200);
  });
});
