import { expect } from "chai";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { connectCall } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

const password = "violet staple orbit 42";
const noticeSubject = "Portcullis: sign-in from a new device";
let accounts = 0;
let devices = 0;
const newDevice = (deviceName: string) => ({ deviceId: `device-${devices++}`, deviceType: DeviceType.ANDROID, deviceName });

describe("New-device notice", () => {
  const mail = new MailInbox();
  const sms = new SmsInbox();
  const platform = platformForSuite({
    inboxes: [mail, sms],
    env: {
      EMAIL_VERIFICATION: "optional",
      RATE_LIMITS: ["register_ip=1000/60", "register_email=1000/60", "login_ip=1000/60", "login_email=1000/60"].join(","),
    },
  });
  const auth = platform.client(AuthService);

  afterEach(() => {
    mail.failing = false;
  });

  /** A password account; its address confirmed unless told otherwise (set in the table, as VerifyEmail would). */
  async function newAccount({ verified = true } = {}) {
    const email = `owner-${accounts++}@example.com`;
    expect((await auth.call("register", { email, password, displayName: "Ana", device: newDevice("Registration") })).error).to.equal(undefined);
    if (verified) await platform.db.query("update app_user set email_verify_time = now() where email = $1", [email]);
    return email;
  }

  /** Signs in by password and waits until the sign-in's device check has finished. */
  async function signIn(email: string, device: ReturnType<typeof newDevice>) {
    const { response, error } = await auth.call("login", { email, password, device });
    expect(error).to.equal(undefined);
    await platform.running.app!.settled();
    return response!;
  }

  const notices = (email: string) => mail.mailsTo(email).filter((m) => m.subject === noticeSubject);
  const noticeAudits = async (userId: string) =>
    (await platform.db.query("select session_id, ip_address, detail from audit_event where event = 'sign_in.new_device' and user_id = $1", [userId])).rows;

  it("mails the owner and audits it when the account signs in from a second device", async () => {
    const email = await newAccount();
    await signIn(email, newDevice("Home laptop"));

    const laptop = await connectCall(
      platform.running.httpPort!,
      "/portcullis.v1.AuthService/Login",
      { email, password, device: { deviceId: "office-pc", deviceType: "DEVICE_TYPE_WEB", deviceName: "Office PC" } },
      { "user-agent": "Firefox/128.0" },
    );
    expect(laptop.status).to.equal(200);
    await platform.running.app!.settled();

    const [notice, ...more] = notices(email);
    expect(more).to.be.empty;
    expect(notice!.text).to.contain("Device: Office PC").and.contain("IP address: 127.0.0.1").and.contain("Browser or app: Firefox/128.0");
    expect(await noticeAudits(laptop.json.user.userId)).to.deep.equal([
      { session_id: laptop.json.sessionId, ip_address: "127.0.0.1", detail: { method: "pwd", notice: "mailed" } },
    ]);
    const listed = await auth.call("listSecurityEvents", {}, bearer(laptop.json.tokens.accessToken));
    expect(listed.response!.events.find((e) => e.type === "sign_in.new_device")).to.deep.include({ deviceName: "Office PC", method: "pwd" });
  });

  it("says nothing when the account signs in again from a device it knows", async () => {
    const email = await newAccount();
    const phone = newDevice("Phone");
    await signIn(email, newDevice("Laptop"));
    await signIn(email, phone);
    expect(notices(email)).to.have.length(1);

    await signIn(email, phone);
    await signIn(email, phone);
    expect(notices(email)).to.have.length(1);
  });

  it("says nothing on the account's first sign-in, and knows that device afterwards", async () => {
    const email = await newAccount();
    const first = newDevice("First phone");
    const { user } = await signIn(email, first);
    expect(notices(email)).to.be.empty;
    expect(await noticeAudits(user!.userId)).to.be.empty;

    await signIn(email, first);
    expect(notices(email), "the first device is known").to.be.empty;
  });

  it("mails nobody while the address is unconfirmed, yet remembers the devices and keeps the sign-in in the history", async () => {
    const email = await newAccount({ verified: false });
    const { user } = await signIn(email, newDevice("Laptop"));
    const phone = await signIn(email, newDevice("Phone"));
    expect(mail.mailsTo(email).map((m) => m.subject)).not.to.include(noticeSubject);
    expect(await noticeAudits(user!.userId)).to.deep.equal([{ session_id: phone.sessionId, ip_address: "127.0.0.1", detail: { method: "pwd", notice: "none" } }]);
    const { rows } = await platform.db.query("select device_id from user_device where user_id = $1", [user!.userId]);
    expect(rows).to.have.length(2);
  });

  it("tells of a phone sign-in from a new device too, once the account has a confirmed address", async () => {
    const phone = newPhone();
    const first = await signInByPhone(platform.running.grpcPort!, sms, phone, "Old phone");
    await platform.running.app!.settled();
    const email = `phone-owner-${accounts++}@example.com`;
    await platform.db.query("update app_user set email = $1, email_verify_time = now() where id = $2", [email, first.user!.userId]);

    const second = await signInByPhone(platform.running.grpcPort!, sms, phone, "New phone");
    await platform.running.app!.settled();

    expect(notices(email)).to.have.length(1);
    expect(notices(email)[0]!.text).to.contain("Device: New phone");
    expect(await noticeAudits(first.user!.userId)).to.deep.equal([
      { session_id: second.sessionId, ip_address: "127.0.0.1", detail: { method: "otp", notice: "mailed" } },
    ]);
  });

  it("lets the sign-in through when the notice cannot be mailed, and audits that it was not", async () => {
    const email = await newAccount();
    await signIn(email, newDevice("Laptop"));
    mail.failing = true;

    const { user, tokens } = await signIn(email, newDevice("Phone"));

    expect(tokens?.accessToken).to.be.a("string").and.not.equal("");
    expect(notices(email)).to.be.empty;
    expect((await noticeAudits(user!.userId)).map((row) => row.detail)).to.deep.equal([{ method: "pwd", notice: "undelivered" }]);
  });
});
