import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { AuthService, type SecurityEvent } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { SessionService } from "../../gen/portcullis/v1/session_service_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { connectCall, detailOf, grpcErrorDetails } from "../support/clients.js";
import { MailInbox } from "../support/mail-inbox.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { platformForSuite } from "../support/suite-platform.js";

const password = "violet staple orbit 42";
let accounts = 0;
let devices = 0;
const device = (deviceName: string) => ({ deviceId: `device-${devices++}`, deviceType: DeviceType.WEB, deviceName });
/** What a test reads of an event: everything but the id and time, which it checks apart. */
const shape = (e: SecurityEvent) => ({
  type: e.type, outcome: e.outcome, method: e.method, deviceName: e.deviceName, sessionId: e.sessionId, ipAddress: e.ipAddress, userAgent: e.userAgent,
});

describe("ListSecurityEvents", () => {
  const mail = new MailInbox();
  const sms = new SmsInbox();
  const platform = platformForSuite({
    inboxes: [mail, sms],
    env: {
      EMAIL_VERIFICATION: "optional",
      PASSWORD_LOCKOUT_THRESHOLD: "2",
      RATE_LIMITS: ["register_ip=1000/60", "register_email=1000/60", "login_ip=1000/60", "login_email=1000/60", "change_password_user=1000/60"].join(","),
    },
  });
  const auth = platform.client(AuthService);
  const sessions = platform.client(SessionService);

  async function newAccount() {
    const email = `events-${accounts++}@example.com`;
    const registered = await auth.call("register", { email, password, displayName: "Ana", device: device("Registration") });
    expect(registered.error).to.equal(undefined);
    const { response } = await auth.call("login", { email, password, device: device("Laptop") });
    return { email, userId: response!.user!.userId, accessToken: response!.tokens!.accessToken };
  }

  /** Every event of the account behind `accessToken`, page after page of `pageSize`. */
  async function allEvents(accessToken: string, pageSize: number): Promise<SecurityEvent[]> {
    const events: SecurityEvent[] = [];
    let pageToken = "";
    do {
      const { response, error } = await auth.call("listSecurityEvents", { pageSize, pageToken }, bearer(accessToken));
      expect(error).to.equal(undefined);
      expect(response!.events.length).to.be.at.most(pageSize);
      events.push(...response!.events);
      pageToken = response!.nextPageToken;
    } while (pageToken);
    return events;
  }

  it("shows sign-ins that worked and failed, a password change and a logout, newest first, with method, device, IP and user agent", async () => {
    const { email } = await newAccount();
    const laptop = await connectCall(
      platform.running.httpPort!,
      "/portcullis.v1.AuthService/Login",
      { email, password, device: { deviceId: "work-laptop", deviceType: "DEVICE_TYPE_WEB", deviceName: "Work laptop" } },
      { "user-agent": "Firefox/128.0" },
    );
    expect(laptop.status).to.equal(200);
    expect((await auth.call("login", { email, password: "not the password", device: device("Thief") })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
    const newPassword = "amber kettle drift 77";
    const changed = await auth.call("changePassword", { currentPassword: password, newPassword }, bearer(laptop.json.tokens.accessToken));
    expect(changed.error).to.equal(undefined);
    const phone = await auth.call("login", { email, password: newPassword, device: device("Phone") });
    const loggedOut = await connectCall(platform.running.httpPort!, "/portcullis.v1.AuthService/Logout", {}, { ...bearer(laptop.json.tokens.accessToken), "user-agent": "Firefox/128.0" });
    expect(loggedOut.status).to.equal(200);
    await platform.running.app!.settled();

    const { response } = await auth.call("listSecurityEvents", {}, bearer(phone.response!.tokens!.accessToken));

    const newDevices = response!.events.filter((e) => e.type === "sign_in.new_device");
    expect(newDevices.map((e) => [e.deviceName, e.method, e.details]), "unconfirmed address: none mailed").to.have.deep.members([
      ["Work laptop", "pwd", { notice: "none" }],
      ["Phone", "pwd", { notice: "none" }],
    ]);
    const [logout, phoneSignIn, passwordChange, failed, laptopSignIn] = response!.events.filter((e) => e.type !== "sign_in.new_device");
    const local = { ipAddress: "127.0.0.1" };
    expect(shape(logout!)).to.deep.include({ type: "logout", outcome: "success", deviceName: "Work laptop", sessionId: laptop.json.sessionId, userAgent: "Firefox/128.0", ...local });
    expect(shape(phoneSignIn!)).to.deep.include({ type: "sign_in", outcome: "success", method: "pwd", deviceName: "Phone", sessionId: phone.response!.sessionId, ...local });
    expect(phoneSignIn!.userAgent, "the stock gRPC client's own").to.match(/^grpc-node-js\//);
    expect(shape(passwordChange!)).to.deep.include({ type: "password.change", outcome: "success", deviceName: "Work laptop", sessionId: laptop.json.sessionId });
    expect(passwordChange!.details).to.deep.equal({ revoked_sessions: "1" });
    expect(shape(failed!)).to.deep.include({ type: "sign_in", outcome: "failure", method: "pwd", deviceName: "", sessionId: "", ...local });
    expect(failed!.details).to.deep.equal({ reason: "wrong_password" });
    expect(shape(laptopSignIn!)).to.deep.include({ type: "sign_in", outcome: "success", method: "pwd", deviceName: "Work laptop", userAgent: "Firefox/128.0" });
    const times = response!.events.map((e) => Number(e.time!.seconds) * 1e9 + e.time!.nanos);
    expect(times, "newest first").to.deep.equal([...times].sort((a, b) => b - a));
    expect(response!.events.map((e) => e.type), "refreshes and the like are for operators").not.to.include.members(["token.refresh", "rate_limit.hit"]);
  });

  it("answers the same through the gateway, in Connect JSON", async () => {
    const { accessToken } = await newAccount();
    const listed = await connectCall(platform.running.httpPort!, "/portcullis.v1.AuthService/ListSecurityEvents", {}, bearer(accessToken));
    expect(listed.status).to.equal(200);
    expect(listed.json.events[0]).to.deep.include({ type: "sign_in", outcome: "success", method: "pwd", deviceName: "Laptop", ipAddress: "127.0.0.1" });
    expect(listed.json.events[0].time).to.match(/^\d{4}-\d\d-\d\dT/);
    expect(listed.json.events[0].eventId).to.match(/^\d+$/);
  });

  it("pages through every event exactly once, also events written in one statement at one instant", async () => {
    const { email, accessToken } = await newAccount();
    for (let i = 0; i < 3; i++) await auth.call("login", { email, password, device: device(`Tablet ${i}`) });
    // The second wrong password locks the account for this source: its failure and the lock share one statement's time.
    for (let i = 0; i < 2; i++) await auth.call("login", { email, password: "wrong password!", device: device("Thief") });
    await platform.running.app!.settled();

    const whole = await allEvents(accessToken, 100);
    expect(whole.map((e) => e.type)).to.include("account.locked");
    const locked = whole.find((e) => e.type === "account.locked")!;
    const lockedFailure = whole[whole.indexOf(locked) + 1]!;
    expect(lockedFailure.time, "the lock and its failure at one instant").to.deep.equal(locked.time);

    for (const pageSize of [1, 2, 3]) {
      expect((await allEvents(accessToken, pageSize)).map((e) => e.eventId), `pages of ${pageSize}`).to.deep.equal(whole.map((e) => e.eventId));
    }
  });

  it("shows only the caller's own events", async () => {
    const ana = await newAccount();
    const bob = await newAccount();
    const anaIds = new Set((await allEvents(ana.accessToken, 100)).map((e) => e.eventId));
    const bobEvents = await allEvents(bob.accessToken, 100);
    expect(bobEvents).not.to.be.empty;
    expect(bobEvents.filter((e) => anaIds.has(e.eventId))).to.be.empty;
    const { rows } = await platform.db.query<{ id: string }>("select id::text from audit_event where user_id = $1", [bob.userId]);
    expect(rows.map((r) => r.id)).to.include.members(bobEvents.map((e) => e.eventId));
  });

  it("refuses a page token that is not one of its own, naming page_token", async () => {
    const { email, accessToken } = await newAccount();
    await auth.call("login", { email, password, device: device("Second") });
    const listed = await sessions.call("listSessions", { pageSize: 1 }, bearer(accessToken));
    const sessionsToken = listed.response!.nextPageToken;
    expect(sessionsToken).not.to.equal("");

    for (const pageToken of [sessionsToken, "garbage"]) {
      const { error } = await auth.call("listSecurityEvents", { pageToken }, bearer(accessToken));
      expect(error?.code).to.equal(grpc.status.INVALID_ARGUMENT);
      expect(detailOf(grpcErrorDetails(error!), BadRequestSchema)?.fieldViolations.map((v) => v.field)).to.deep.equal(["page_token"]);
    }
  });

  it("never shows a phone number in clear, nor who acted on the account for an operator, nor where they were", async () => {
    const phone = newPhone();
    const signedIn = await signInByPhone(platform.running.grpcPort!, sms, phone, "Pixel");
    const userId = signedIn.user!.userId;
    // As flows write them: one slipped a full number in; a reviewer raised the KYC level from the back office.
    await platform.db.query(
      `insert into audit_event (event, outcome, user_id, ip_address, user_agent, detail) values
         ('phone.change', 'success', $1, '127.0.0.1', 'app', jsonb_build_object('phone', $2::text)),
         ('kyc.level_change', 'success', $1, '10.20.30.40', 'BackOffice/2.0', jsonb_build_object('level', 2, 'by', 'reviewer-7f3a'))`,
      [userId, phone],
    );

    const events = await allEvents(signedIn.tokens!.accessToken, 100);

    expect(JSON.stringify(events.map((e) => ({ ...e, time: undefined })))).not.to.contain(phone);
    expect(events.find((e) => e.type === "phone.change")!.details.phone).to.match(/^\+44\*+\d\d$/);
    const raised = events.find((e) => e.type === "kyc.level_change")!;
    expect(raised.details).to.deep.equal({ level: "2" });
    expect(shape(raised)).to.deep.include({ ipAddress: "", userAgent: "" });
    expect(shape(events.at(-1)!)).to.deep.include({ type: "sign_in", method: "otp", deviceName: "Pixel" });
  });

  it("shows the wrong sign-in codes typed for the account's number", async () => {
    const phone = newPhone();
    const signedIn = await signInByPhone(platform.running.grpcPort!, sms, phone, "Pixel");
    expect((await auth.call("sendOtp", { phoneNumber: phone })).error).to.equal(undefined);
    const code = sms.codeFor(phone);
    const wrong = await auth.call("verifyOtp", { phoneNumber: phone, code: code === "000000" ? "111111" : "000000", device: device("Thief") });
    expect(wrong.error?.code).to.equal(grpc.status.INVALID_ARGUMENT);

    const failures = (await allEvents(signedIn.tokens!.accessToken, 100)).filter((e) => e.type === "otp.verify");
    expect(failures.map((e) => [e.outcome, e.ipAddress, e.details])).to.deep.equal([
      ["failure", "127.0.0.1", { phone: `${phone.slice(0, 3)}${"*".repeat(phone.length - 5)}${phone.slice(-2)}`, attempt: "1", failures_in_window: "1" }],
    ]);
  });

  it("keeps what only operators should see out of the history: the reason an operator typed, the operator, and their address", async () => {
    const { userId, accessToken } = await newAccount();
    // As AdminService.DisableUser and EnableUser write them.
    await platform.db.query(
      `insert into audit_event (event, outcome, user_id, ip_address, user_agent, detail) values
         ('account.disable', 'success', $1, '10.20.30.40', 'AdminConsole/1.0',
          jsonb_build_object('actor', 'operator-7f3a', 'reason', 'chargeback, see ticket 4411 (J. Smith)', 'revoked_sessions', 1)),
         ('account.enable', 'success', $1, '10.20.30.40', 'AdminConsole/1.0', jsonb_build_object('actor', 'operator-7f3a'))`,
      [userId],
    );

    const events = await allEvents(accessToken, 100);

    const disabled = events.find((e) => e.type === "account.disable")!;
    expect(disabled.details).to.deep.equal({ revoked_sessions: "1" });
    expect(shape(disabled)).to.deep.include({ ipAddress: "", userAgent: "" });
    expect(events.find((e) => e.type === "account.enable")!.details).to.deep.equal({});
    expect(JSON.stringify(events.map((e) => e.details))).not.to.contain("chargeback");
  });
});
