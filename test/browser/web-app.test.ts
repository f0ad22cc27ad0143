import { rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { addVirtualAuthenticator, launchChromium, screenshot, watchCsp } from "../support/browser.js";
import { connectCall } from "../support/clients.js";
import { freePort } from "../support/redis-servers.js";
import { bearer, newPhone } from "../support/sign-in.js";
import { consoleCode, launch, startBoundMs, type StartCommand } from "../support/start-command.js";
import { serveWebApp, webAppFiles } from "../../gateway/web-app.js";

/** The shortest access-token lifetime the platform allows; the expiry tests wait it out once. */
const accessTokenTtlSeconds = 60;

/** The page's client library, as the web app exposes it for the console. */
type PageClient = {
  auth: { getProfile(request: object): Promise<unknown> };
  sessions: { getSession(request: object): Promise<unknown> };
  currentSession(): Promise<{ sessionId?: string } | null>;
};
declare const portcullis: PageClient;

/** Waits until the first element matching `selector` contains `text`. */
async function waitForText(page: Page, selector: string, text: string): Promise<void> {
  await page.waitForFunction(([selector, text]) => document.querySelector(selector!)?.textContent?.includes(text!), [selector, text]);
}

/** A static server of the web app on an origin of its own (a port of 127.0.0.1), calling the API at `apiBaseUrl`. */
async function serveApp(port: number, apiBaseUrl: string): Promise<Server> {
  const files = await webAppFiles({ apiBaseUrl });
  const server = createServer((req, res) => {
    if (!serveWebApp(files, req, res, (req.url ?? "/").split("?")[0]!)) res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

describe("The web app in Chromium", function () {
  this.timeout(startBoundMs + 60_000);
  let command: StartCommand;
  let browser: Browser;
  let listedPort: number;
  let appUrl: string;
  /** Each test's browser contexts, with the CSP violations their pages report. */
  const contexts: { context: BrowserContext; violations: string[] }[] = [];

  before(async () => {
    listedPort = await freePort();
    command = await launch(["start"], (ports) => ({
      APP_URL: `http://localhost:${ports.http}`,
      CORS_ORIGINS: `http://127.0.0.1:${listedPort}`,
      ACCESS_TOKEN_TTL_SECONDS: String(accessTokenTtlSeconds),
      // Expired means expired: no grace the expiry tests would have to wait out too.
      JWT_CLOCK_TOLERANCE_SECONDS: "0",
      // Every sign-in of these tests comes from one IP and one block of numbers.
      OTP_PREFIX_HOURLY_BUDGET: "1000",
      RATE_LIMITS: "otp_send_ip=1000/3600,otp_verify_ip=1000/3600",
    }));
    appUrl = `http://localhost:${command.ports.http}/`;
    [browser] = await Promise.all([launchChromium(), command.serving()]);
  });

  after(async () => {
    await browser?.close();
    command?.kill();
    if (command) rmSync(command.dataDir, { recursive: true, force: true });
  });

  afterEach(async () => {
    const closing = contexts.splice(0);
    await Promise.all(closing.map(({ context }) => context.close()));
    expect(closing.flatMap(({ violations }) => violations), "CSP violations").to.deep.equal([]);
  });

  async function newContext(): Promise<BrowserContext> {
    const context = await browser.newContext();
    contexts.push({ context, violations: await watchCsp(context) });
    return context;
  }

  async function openApp(context: BrowserContext, url = appUrl): Promise<Page> {
    const page = await context.newPage();
    await page.goto(url);
    return page;
  }

  async function signInByPhone(page: Page, phone = newPhone()): Promise<string> {
    await page.fill("#phone", phone);
    await page.click("#send-code");
    await page.fill("#code", await consoleCode(command, "sms", phone));
    await page.click("#verify-code");
    await page.locator("#account").waitFor({ state: "visible" });
    return phone;
  }

  /** Counts the RefreshToken calls the context's pages make. */
  function countRefreshes(context: BrowserContext): () => number {
    let refreshes = 0;
    context.on("request", (request) => {
      if (request.url().endsWith("/portcullis.v1.AuthService/RefreshToken")) refreshes++;
    });
    return () => refreshes;
  }

  /** Signs `phone` in with Connect calls from outside the browser, as another device would. */
  async function signInElsewhere(phone: string): Promise<string> {
    await connectCall(command.ports.http, "/portcullis.v1.AuthService/SendOtp", { phoneNumber: phone });
    const device = { deviceId: `other-${phone}`, deviceType: "DEVICE_TYPE_ANDROID", deviceName: "Other phone" };
    const signedIn = await connectCall(command.ports.http, "/portcullis.v1.AuthService/VerifyOtp", { phoneNumber: phone, code: await consoleCode(command, "sms", phone), device });
    return signedIn.json.tokens.accessToken;
  }

  it("signs in by phone and shows the profile, and a reload keeps the session", async () => {
    const page = await openApp(await newContext());
    await screenshot(page, "sign-in");
    const phone = await signInByPhone(page);
    await waitForText(page, "#profile-phone", phone);
    await page.locator("#devices li").first().waitFor();
    await screenshot(page, "account");

    await page.reload();
    await page.locator("#account").waitFor({ state: "visible" });
    await waitForText(page, "#profile-phone", phone);
  });

  it("notices a session revoked from another device at its next call and shows the sign-in screen", async () => {
    const page = await openApp(await newContext());
    const phone = await signInByPhone(page);
    const { sessionId } = (await page.evaluate(() => portcullis.currentSession()))!;
    const otherDevice = await signInElsewhere(phone);
    expect((await connectCall(command.ports.http, "/portcullis.v1.SessionService/RevokeSession", { sessionId }, bearer(otherDevice))).json).to.deep.equal({});

    await page.click("#refresh-devices");
    await page.locator("#sign-in").waitFor({ state: "visible" });
    expect(await page.locator("#account").isVisible()).to.equal(false);
    expect(await page.evaluate(() => portcullis.currentSession())).to.equal(null);
    await screenshot(page, "signed-out");
  });

  describe("when the access token expires", () => {
    let single: { page: Page; refreshes: () => number };
    let tabs: { pages: Page[]; refreshes: () => number };
    const violations: string[][] = [];

    // Both scenarios sign in first, then wait out the token's lifetime once. The pages' clocks are paused, so
    // neither the app's own timers nor its refresh-ahead run: the calls go out with a token the server finds expired.
    before(async function () {
      this.timeout(accessTokenTtlSeconds * 1000 + 60_000);
      const singleContext = await browser.newContext();
      const tabsContext = await browser.newContext();
      for (const context of [singleContext, tabsContext]) {
        violations.push(await watchCsp(context));
        await context.clock.install();
      }
      single = { page: await openApp(singleContext), refreshes: countRefreshes(singleContext) };
      await signInByPhone(single.page);
      const first = await openApp(tabsContext);
      await signInByPhone(first);
      const second = await openApp(tabsContext);
      await second.locator("#account").waitFor({ state: "visible" });
      tabs = { pages: [first, second], refreshes: countRefreshes(tabsContext) };
      for (const page of [single.page, first, second]) await page.clock.pauseAt(await page.evaluate(() => Date.now() + 1000));
      await sleep((accessTokenTtlSeconds + 2) * 1000);
    });

    after(async () => {
      await single?.page.context().close();
      await tabs?.pages[0]!.context().close();
      expect(violations.flat(), "CSP violations").to.deep.equal([]);
    });

    it("ten calls in flight share one refresh, and all ten succeed", async () => {
      const answered = await single.page.evaluate(() => Promise.all(Array.from({ length: 10 }, () => portcullis.auth.getProfile({}))).then((all) => all.length));
      expect(answered).to.equal(10);
      expect(single.refreshes()).to.equal(1);
    });

    it("two tabs past expiry at once refresh once, and both keep the session", async () => {
      const both = () => Promise.all(tabs.pages.map((page) => page.evaluate(() => portcullis.auth.getProfile({}).then(() => "ok"))));
      expect(await both()).to.deep.equal(["ok", "ok"]);
      expect(tabs.refreshes()).to.equal(1);
      expect(await both()).to.deep.equal(["ok", "ok"]);
      const sessions = await Promise.all(tabs.pages.map((page) => page.evaluate(() => portcullis.sessions.getSession({}).then(() => "live"))));
      expect(sessions).to.deep.equal(["live", "live"]);
    });
  });

  it("says where passkeys work when the page is opened at an IP address, which can be no relying party", async () => {
    const page = await openApp(await newContext(), `http://127.0.0.1:${command.ports.http}/`);
    await addVirtualAuthenticator(page);
    await page.click("#sign-in-passkey");
    await waitForText(page, "#error", "open this page there");
  });

  describe("served from another origin", () => {
    const servers: Server[] = [];
    const api = () => `http://127.0.0.1:${command.ports.http}`;
    after(() => servers.forEach((server) => server.close()));

    it("works from an origin listed in CORS_ORIGINS", async () => {
      servers.push(await serveApp(listedPort, api()));
      const page = await openApp(await newContext(), `http://127.0.0.1:${listedPort}/`);
      await signInByPhone(page);
      await waitForText(page, "#profile-phone", "+44");
    });

    it("is blocked by the browser from an origin that is not listed", async () => {
      const unlistedPort = await freePort();
      servers.push(await serveApp(unlistedPort, api()));
      const page = await openApp(await newContext(), `http://127.0.0.1:${unlistedPort}/`);
      const blocked = page.waitForEvent("console", (message) => /blocked by CORS policy/.test(message.text()));
      await page.fill("#phone", newPhone());
      await page.click("#send-code");
      await blocked;
      await page.locator("#error").waitFor({ state: "visible" });
      expect(await page.locator("#code").isVisible()).to.equal(false);
    });
  });

  it("registers a passkey, signs out, and signs in with it, also in a fresh browser context", async () => {
    const page = await openApp(await newContext());
    const authenticator = await addVirtualAuthenticator(page);
    await signInByPhone(page);
    await page.fill("#passkey-name", "Virtual authenticator");
    await page.click("#add-passkey");
    await waitForText(page, "#passkeys li", "Virtual authenticator");
    await screenshot(page, "passkeys");

    await page.click("#sign-out");
    await page.locator("#sign-in").waitFor({ state: "visible" });
    await page.click("#sign-in-passkey");
    await page.locator("#account").waitFor({ state: "visible" });

    const [credential] = await authenticator.credentials();
    const fresh = await openApp(await newContext());
    await (await addVirtualAuthenticator(fresh)).add(credential!);
    await fresh.click("#sign-in-passkey");
    await fresh.locator("#account").waitFor({ state: "visible" });
    const session = await fresh.evaluate(() => portcullis.currentSession());
    const claims = JSON.parse(Buffer.from((session as { accessToken: string }).accessToken.split(".")[1]!, "base64url").toString());
    expect(claims.amr).to.include("passkey");
  });
});
