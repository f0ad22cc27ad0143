import { expect } from "chai";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { MailInbox } from "../support/mail-inbox.js";
import { expectNoSecretLeaked } from "../support/secrets.js";
import { bearer, newPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

/** Every flow of the account lifecycle, with logs at info: no code, link token or password reaches a log line or an audit row. */
describe("The account lifecycle's secrets", function () {
  this.timeout(60_000);
  const mail = new MailInbox();
  const sms = new SmsInbox();
  const secrets: string[] = [];
  const platform = platformForSuite({ inboxes: [mail, sms], logs: true, env: { EMAIL_VERIFICATION_RESEND_SECONDS: "0" } });
  const auth = platform.client(AuthService);

  /** The call's answer, failing the test on an error; what it hands out is remembered as a secret. */
  async function ok<M extends keyof typeof AuthService.method>(method: M, request: object, accessToken?: string) {
    const result = await auth.call(method as never, request as never, accessToken ? bearer(accessToken) : undefined);
    if (result.error) throw new Error(`${String(method)}: ${result.error.message}`);
    return result.response as any;
  }

  /** The code and link token of the latest mail to `address`, once the mails sent after answers have gone. */
  async function mailed(address: string): Promise<{ code: string; token: string }> {
    await platform.running.app!.settled();
    const secret = { code: mail.codeFor(address), token: mail.tokenFor(address) };
    secrets.push(secret.code, secret.token);
    return secret;
  }

  it("keeps them out of logs and the audit log across register, verify, login, change of address and number, and reset", async () => {
    const email = "lena@example.com";
    const device = { deviceId: "laptop-1", deviceType: DeviceType.DESKTOP, deviceName: "Laptop" };
    const password = "first secret passphrase";
    secrets.push(password);
    await ok("register", { email, password, device });
    await auth.call("login", { email, password, device });
    await ok("verifyEmail", { token: (await mailed(email)).token });
    const login = await ok("login", { email, password, device });
    secrets.push(login.tokens.accessToken, login.tokens.refreshToken);

    await auth.call("changeEmail", { newEmail: "lena@example.org", currentPassword: "a wrong passphrase" }, bearer(login.tokens.accessToken));
    await ok("changeEmail", { newEmail: "lena@example.org", currentPassword: password }, login.tokens.accessToken);
    await auth.call("verifyEmail", { email: "lena@example.org", code: "000000" });
    await ok("verifyEmail", { email: "lena@example.org", code: (await mailed("lena@example.org")).code });

    const phone = newPhone();
    await ok("changePhoneNumber", { phoneNumber: phone, currentPassword: password }, login.tokens.accessToken);
    secrets.push(sms.codeFor(phone));
    await ok("verifyPhoneNumber", { code: sms.codeFor(phone) }, login.tokens.accessToken);

    await ok("requestPasswordReset", { email: "lena@example.org" });
    const reset = await mailed("lena@example.org");
    const newPassword = "second secret passphrase";
    secrets.push(newPassword);
    await auth.call("resetPassword", { email: "lena@example.org", code: "000000", newPassword });
    await ok("resetPassword", { token: reset.token, newPassword });
    await auth.call("resetPassword", { token: reset.token, newPassword });
    const again = await ok("login", { email: "lena@example.org", password: newPassword, device });
    secrets.push(again.tokens.accessToken, again.tokens.refreshToken);
    await ok("listSecurityEvents", {}, again.tokens.accessToken);

    expect(platform.logLines.length).to.be.greaterThan(10);
    await expectNoSecretLeaked(platform.db, platform.logLines, secrets);
  });
});
