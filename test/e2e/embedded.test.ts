import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import type { Running } from "../../services/app/servers.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { grpcClient } from "../support/clients.js";
import { startPlatform } from "../support/platform.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";

/** What `npm start` runs on a fresh clone: no DATABASE_URL, no REDIS_URL, no key. */
describe("The embedded default", function () {
  this.timeout(120_000);
  const inbox = new SmsInbox();
  const dataDir = mkdtempSync(join(tmpdir(), "portcullis-embedded-"));
  let running: Running;

  before(async () => {
    running = await startPlatform({ DATA_DIR: dataDir, ...(await inbox.env()) });
  });
  after(async () => {
    await running?.stop();
    await inbox.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("signs in by phone and serves the profile, with PGlite and in-process stores", async () => {
    const signedIn = (await signInByPhone(running.grpcPort!, inbox, newPhone()))!;
    const auth = grpcClient(AuthService, running.grpcPort!);
    const profile = await auth.call("getProfile", {}, bearer(signedIn.tokens!.accessToken));
    expect(profile.response?.user?.userId).to.equal(signedIn.user!.userId);
    expect((await auth.call("logout", {}, bearer(signedIn.tokens!.accessToken))).error).to.equal(undefined);
    expect((await auth.call("getProfile", {}, bearer(signedIn.tokens!.accessToken))).error?.code).to.equal(16);
    auth.close();
  });

  it("refuses a second start on the same data folder while the first runs", async () => {
    let error: unknown;
    try {
      await startPlatform({ DATA_DIR: dataDir });
    } catch (e) {
      error = e;
    }
    expect(String(error)).to.match(/in use by process/);
  });
});
