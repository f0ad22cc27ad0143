import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { build } from "esbuild";
import type { Browser, BrowserContext, Page } from "playwright-core";
import type { Running } from "../../services/app/servers.js";
import { launchChromium } from "../support/browser.js";
import { sharedStores, startPlatform } from "../support/platform.js";
import { newPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { dropTestDatabases } from "../support/stores.js";
import { until } from "../support/until.js";

/**
 * The library as a browser runs it: bundled for the browser alone (a Node-only
 * import fails the build), served from a page on localhost (a secure context,
 * so navigator.locks exists), in two tabs of one origin sharing localStorage.
 */
describe("portcullis/client in Chromium", () => {
  const inbox = new SmsInbox();
  let site: Server;
  let running: Running;
  let browser: Browser;
  let context: BrowserContext;
  let tabs: Page[];

  before(async () => {
    const bundle = await build({ entryPoints: ["client/index.ts"], bundle: true, platform: "browser", format: "esm", write: false });
    site = createServer((request, response) => {
      if (request.url === "/client.js") return response.writeHead(200, { "content-type": "text/javascript" }).end(bundle.outputFiles[0]!.contents);
      response.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>app</title>");
    });
    await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
    const app = `http://localhost:${(site.address() as AddressInfo).port}`;
    running = await startPlatform({
      ...(await sharedStores()),
      ...(await inbox.env()),
      CORS_ORIGINS: app,
      // A used refresh token presented again revokes the session at once: two tabs refreshing apart would show.
      REFRESH_REUSE_INTERVAL: "0",
    });
    browser = await launchChromium();
    context = await browser.newContext();
    tabs = [await context.newPage(), await context.newPage()];
    for (const tab of tabs) {
      await tab.goto(`${app}/`);
      // Strings, not functions: the test runner's transform would put its helpers into the page's code.
      await tab.evaluate(`import("/client.js").then((library) => {
        window.library = library;
        window.ended = [];
        window.client = library.createPortcullisClient({
          baseUrl: ${JSON.stringify(`http://localhost:${running.httpPort}`)},
          storage: library.localStorageAdapter(),
          onSessionEnd: ({ reason }) => window.ended.push(reason),
        });
      })`);
    }
  });
  after(async () => {
    await browser?.close();
    await running.stop();
    await inbox.stop();
    site.close();
    await dropTestDatabases();
  });

  const expireStoredAccessToken = `(() => {
    const session = JSON.parse(localStorage.getItem("portcullis.session"));
    localStorage.setItem("portcullis.session", JSON.stringify({ ...session, accessTokenExpireTime: Date.now() - 1000 }));
  })()`;

  it("signs in, shares one refresh between two tabs through navigator.locks, types errors, and signs both tabs out", async () => {
    const [first, second] = tabs as [Page, Page];
    expect(await first.evaluate("typeof navigator.locks.request")).to.equal("function");
    const phone = newPhone();
    await first.evaluate(`client.auth.sendOtp({ phoneNumber: ${JSON.stringify(phone)} }).then(() => undefined)`);
    await first.evaluate(`client.auth.verifyOtp({
      phoneNumber: ${JSON.stringify(phone)}, code: ${JSON.stringify(inbox.codeFor(phone))},
      device: { deviceId: "chromium", deviceType: 3, deviceName: "Chromium" },
    }).then(() => undefined)`);

    await first.evaluate(expireStoredAccessToken);
    let refreshes = 0;
    context.on("request", (request) => void (request.url().endsWith("/RefreshToken") && refreshes++));
    const profile = "client.auth.getProfile({}).then((answer) => answer.user.phoneNumber)";
    expect(await Promise.all([first.evaluate(profile), second.evaluate(profile), first.evaluate(profile)])).to.deep.equal([phone, phone, phone]);
    expect(refreshes).to.equal(1);

    expect(await second.evaluate(`client.kyc.submitDocumentKyc({}).catch((error) =>
      [error instanceof library.KycLevelRequiredError, error.requiredLevel, error.currentLevel])`)).to.deep.equal([true, 1, 0]);

    await first.evaluate("client.signOut()");
    await until(async () => (await second.evaluate("ended.length")) !== 0, 2000);
    expect(await first.evaluate("ended")).to.deep.equal(["SIGNED_OUT"]);
    expect(await second.evaluate("ended")).to.deep.equal(["SIGNED_OUT"]);
    expect(await second.evaluate(`client.auth.getProfile({}).catch((error) => [error instanceof library.SessionEndedError, error.reason])`)).to.deep.equal([true, "TOKEN_MISSING"]);
  });
});
