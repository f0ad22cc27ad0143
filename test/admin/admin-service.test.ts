import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { userInfo } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { getOption } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { knownPermissions } from "../../services/admin/permissions.js";
import type { Running } from "../../services/app/servers.js";
import type { UnaryHandler } from "../../services/guard/guard.js";
import { field as fieldRules } from "../../gen/buf/validate/validate_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import {
  AdminService,
  GrantPermissionRequestSchema,
  RevokePermissionRequestSchema,
  UserStatus,
} from "../../gen/portcullis/v1/admin_service_pb.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType } from "../../gen/portcullis/v1/common_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { connectCall, detailOf, fieldsOf, grpcClient, grpcErrorDetails } from "../support/clients.js";
import { serveBehindGuard } from "../support/guarded-service.js";
import { MailInbox } from "../support/mail-inbox.js";
import { freePort } from "../support/redis-servers.js";
import { runAdmin, startPlatform } from "../support/platform.js";
import { bearer, newPhone, signInByPhone } from "../support/sign-in.js";
import { SmsInbox } from "../support/sms-inbox.js";
import { claimsOf } from "../support/service-accounts.js";
import { platformForSuite } from "../support/suite-platform.js";

const password = "a passphrase for operators";
const wrongPassword = "not the passphrase at all";
const device = (name = "Laptop") => ({ deviceId: `${name}-${randomUUID()}`, deviceType: DeviceType.WEB, deviceName: name });

/**
 * AdminService on two instances sharing Postgres and Redis, used by an
 * operator given user.admin and audit.read with the command-line tool.
 * Wrong passwords lock an account for their source at the third, and
 * everywhere at the fourth from all sources; calls come through a trusted
 * proxy that may name the client in X-Forwarded-For.
 */
describe("AdminService", () => {
  const sms = new SmsInbox();
  const mail = new MailInbox();
  let a: Running;
  let b: Running;
  let operatorId: string;
  let operatorToken: string;
  let operatorPhone: string;
  const clients: { close(): void }[] = [];
  // Registered before the platform's own after hook, so it runs first, while the instances are up.
  after(() => clients.forEach((client) => client.close()));
  const platform = platformForSuite({
    inboxes: [sms, mail],
    instances: 2,
    env: {
      EMAIL_VERIFICATION: "optional",
      TRUSTED_PROXIES: "127.0.0.1",
      PASSWORD_LOCKOUT_THRESHOLD: "3",
      PASSWORD_LOCKOUT_ACCOUNT_THRESHOLD: "4",
      RATE_LIMITS:
        "otp_send_ip=1000/3600,otp_send_phone=100/3600,otp_send_global=1000/60,otp_verify_ip=1000/3600,register_ip=1000/3600," +
        "login_ip=1000/900,login_email=1000/900,refresh_ip=1000/60,refresh_user=1000/60",
    },
  });

  const adminOn = (running: Running) => {
    const client = grpcClient(AdminService, running.grpcPort!);
    clients.push(client);
    return client;
  };
  const authOn = (running: Running) => {
    const client = grpcClient(AuthService, running.grpcPort!);
    clients.push(client);
    return client;
  };
  const kycOn = (running: Running) => {
    const client = grpcClient(KycService, running.grpcPort!);
    clients.push(client);
    return client;
  };
  const asOperator = bearer;

  /** A password account (verification optional), signed in once; its id and the sign-in. */
  async function register(email: string) {
    const auth = authOn(a);
    const registered = await auth.call("register", { email, password, device: device() });
    expect(registered.error).to.equal(undefined);
    const signedIn = await auth.call("login", { email, password, device: device() });
    expect(signedIn.error).to.equal(undefined);
    return { userId: signedIn.response!.user!.userId, tokens: signedIn.response!.tokens! };
  }

  const login = (email: string, pass = password, from?: string) =>
    authOn(a).call("login", { email, password: pass, device: device() }, from ? { "x-forwarded-for": from } : {});

  /** The audit rows an actor left, oldest first. */
  async function auditedBy(actor: string, userId: string) {
    const { rows } = await platform.db.query("select event, outcome, detail from audit_event where detail->>'actor' = $1 and user_id = $2 order by id", [
      actor,
      userId,
    ]);
    return rows;
  }

  before(async () => {
    [a, b] = platform.instances as [Running, Running];

    operatorPhone = newPhone();
    await signInByPhone(a.grpcPort!, sms, operatorPhone, "Operator");
    expect((await runAdmin(platform.stores, "grant", operatorPhone, "user.admin")).stdout).to.match(/granted user\.admin/);
    expect((await runAdmin(platform.stores, "grant", operatorPhone, "audit.read")).stdout).to.match(/granted audit\.read/);
    const operator = (await signInByPhone(a.grpcPort!, sms, operatorPhone, "Operator"))!;
    operatorId = operator.user!.userId;
    operatorToken = operator.tokens!.accessToken;
    expect(claimsOf(operatorToken).perm).to.deep.equal(["user.admin", "audit.read"]);
  });

  describe("who may call it", () => {
    it("refuses a caller without user.admin with PERMISSION_DENIED, through both doors", async () => {
      const user = (await signInByPhone(a.grpcPort!, sms, newPhone()))!;
      const refused = await adminOn(a).call("listUsers", {}, bearer(user.tokens!.accessToken));
      expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)).to.deep.include({ reason: "PERMISSION_REQUIRED", metadata: { permissions: "user.admin" } });
      const viaGateway = await connectCall(b.httpPort!, "/portcullis.v1.AdminService/DisableUser", { userId: operatorId, reason: "takeover" }, bearer(user.tokens!.accessToken));
      expect(viaGateway.status).to.equal(403);
      expect((await platform.db.query("select disable_time from app_user where id = $1", [operatorId])).rows[0].disable_time).to.equal(null);
    });

    it("gives a permission at the grantee's next refresh; user.admin alone does not read the audit log; an operator may give up their own permission", async () => {
      const helper = (await signInByPhone(a.grpcPort!, sms, newPhone(), "Helper"))!;
      const helperId = helper.user!.userId;
      const granted = await adminOn(a).call("grantPermission", { userId: helperId, permission: "user.admin" }, asOperator(operatorToken));
      expect(granted.response?.permissions).to.deep.equal(["user.admin"]);

      const beforeRefresh = await adminOn(b).call("listUsers", {}, bearer(helper.tokens!.accessToken));
      expect(beforeRefresh.error?.code, "the token issued before the grant").to.equal(grpc.status.PERMISSION_DENIED);
      const refreshed = (await authOn(b).call("refreshToken", { refreshToken: helper.tokens!.refreshToken })).response!.tokens!;
      const helperToken = refreshed.accessToken;
      expect((await adminOn(b).call("listUsers", { pageSize: 1 }, bearer(helperToken))).error).to.equal(undefined);
      const auditRead = await adminOn(b).call("listAuditEvents", {}, bearer(helperToken));
      expect(auditRead.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      expect(detailOf(grpcErrorDetails(auditRead.error!), ErrorInfoSchema)?.metadata).to.deep.equal({ permissions: "audit.read" });

      const ownGrant = await adminOn(b).call("grantPermission", { userId: helperId, permission: "audit.read" }, bearer(helperToken));
      expect(ownGrant.error?.code, "granting oneself").to.equal(grpc.status.PERMISSION_DENIED);
      const givenUp = await adminOn(b).call("revokePermission", { userId: helperId, permission: "user.admin" }, bearer(helperToken));
      expect(givenUp.response?.permissions).to.deep.equal([]);
      expect((await adminOn(a).call("listUsers", { pageSize: 1 }, bearer(helperToken))).error?.code, "the next call, other instance").to.equal(
        grpc.status.PERMISSION_DENIED,
      );

      expect(await auditedBy(operatorId, helperId)).to.deep.equal([
        { event: "permission.grant", outcome: "success", detail: { actor: operatorId, permission: "user.admin" } },
      ]);
      expect(await auditedBy(helperId, helperId)).to.deep.equal([
        { event: "permission.grant", outcome: "denied", detail: { actor: helperId, permission: "audit.read", reason: "own_account" } },
        { event: "permission.revoke", outcome: "success", detail: { actor: helperId, permission: "user.admin" } },
      ]);
    });

    it("refuses an operator acting on their own account, keeps the attempt in the audit log, and changes nothing", async () => {
      const admin = adminOn(a);
      const attempts = [
        await admin.call("disableUser", { userId: operatorId, reason: "cover my tracks" }, asOperator(operatorToken)),
        await admin.call("enableUser", { userId: operatorId }, asOperator(operatorToken)),
        await admin.call("unlockUser", { userId: operatorId }, asOperator(operatorToken)),
        await admin.call("grantPermission", { userId: operatorId, permission: "kyc.review" }, asOperator(operatorToken)),
        // The same id in upper case names the same account.
        await admin.call("grantPermission", { userId: operatorId.toUpperCase(), permission: "kyc.review" }, asOperator(operatorToken)),
      ];
      expect(attempts.map((attempt) => attempt.error?.code)).to.deep.equal(Array(5).fill(grpc.status.PERMISSION_DENIED));
      const self = (await admin.call("getUser", { userId: operatorId }, asOperator(operatorToken))).response!.user!;
      expect(self.permissions).to.deep.equal(["user.admin", "audit.read"]);
      expect(self.disableTime).to.equal(undefined);
      const denied = (await auditedBy(operatorId, operatorId)).filter((row) => row.outcome === "denied");
      expect(denied.map((row) => [row.event, row.detail.reason])).to.deep.equal([
        ["account.disable", "own_account"],
        ["account.enable", "own_account"],
        ["account.unlock", "own_account"],
        ["permission.grant", "own_account"],
        ["permission.grant", "own_account"],
      ]);
    });
  });

  describe("ListUsers", () => {
    it("lists accounts newest first by email prefix (lower-cased, % and _ taken literally), page by page", async () => {
      const tag = randomBytes(4).toString("hex");
      const users = [];
      for (let i = 0; i < 4; i++) users.push(await register(`adm_${tag}.${i}@example.com`));
      const lookalike = await register(`admx${tag}.9@example.com`);
      const newestFirst = users.map((user) => user.userId).reverse();

      const admin = adminOn(b);
      const pages: string[][] = [];
      let pageToken = "";
      do {
        const page = await admin.call("listUsers", { emailPrefix: ` ADM_${tag.toUpperCase()}`, pageSize: 3, pageToken }, asOperator(operatorToken));
        expect(page.error).to.equal(undefined);
        pages.push(page.response!.users.map((managed) => managed.user!.userId));
        pageToken = page.response!.nextPageToken;
      } while (pageToken);
      expect(pages).to.deep.equal([newestFirst.slice(0, 3), newestFirst.slice(3)]);
      expect(pages.flat()).not.to.include(lookalike.userId);

      const one = (await admin.call("listUsers", { emailPrefix: `adm_${tag}.3`, pageSize: 1 }, asOperator(operatorToken))).response!;
      expect(one.nextPageToken, "nothing after the last one").to.equal("");
      expect(one.users[0]).to.deep.include({ permissions: [], activeSessionCount: 1 });
      expect(one.users[0]!.disableTime, "enabled").to.equal(undefined);
      expect(one.users[0]!.user).to.deep.include({ userId: users[3]!.userId, email: `adm_${tag}.3@example.com` });
      expect(one.users[0]!.lockStatus).to.deep.include({ locked: false, lockedSourceCount: 0, failedSignIns: 0 });

      const percent = await admin.call("listUsers", { emailPrefix: "%" }, asOperator(operatorToken));
      expect(percent.response?.users, "% is a character like any other").to.deep.equal([]);
    });

    it("filters by phone prefix, status and KYC level (a level of 0 is a filter too)", async () => {
      const tag = randomBytes(4).toString("hex");
      const [disabled, locked, verified, plain] = [
        await register(`st${tag}.0@example.com`),
        await register(`st${tag}.1@example.com`),
        await register(`st${tag}.2@example.com`),
        await register(`st${tag}.3@example.com`),
      ];
      const admin = adminOn(a);
      await admin.call("disableUser", { userId: disabled.userId, reason: "test" }, asOperator(operatorToken));
      for (let i = 0; i < 3; i++) await login(`st${tag}.1@example.com`, wrongPassword, "198.51.100.7");
      await platform.db.query("update app_user set kyc_level = 2 where id = $1", [verified.userId]);

      const ids = async (filter: Record<string, unknown>) => {
        const listed = await admin.call("listUsers", { emailPrefix: `st${tag}`, ...filter }, asOperator(operatorToken));
        expect(listed.error).to.equal(undefined);
        return listed.response!.users.map((managed) => managed.user!.userId);
      };
      expect(await ids({ status: UserStatus.DISABLED })).to.deep.equal([disabled.userId]);
      expect(await ids({ status: UserStatus.ACTIVE }), "locked accounts are enabled").to.deep.equal([plain.userId, verified.userId, locked.userId]);
      expect(await ids({ status: UserStatus.LOCKED }), "a lock for one source").to.deep.equal([locked.userId]);
      expect(await ids({ kycLevel: 2 })).to.deep.equal([verified.userId]);
      expect(await ids({ kycLevel: 0 })).to.deep.equal([plain.userId, locked.userId, disabled.userId]);
      expect(await ids({})).to.have.length(4);

      const byPhone = await admin.call("listUsers", { phonePrefix: operatorPhone }, asOperator(operatorToken));
      expect(byPhone.response!.users.map((managed) => managed.user!.userId)).to.deep.equal([operatorId]);
      expect(byPhone.response!.users[0]!.permissions).to.deep.equal(["user.admin", "audit.read"]);
    });

    it("refuses a bad filter or page token with INVALID_ARGUMENT naming the field", async () => {
      const admin = adminOn(a);
      const badPhone = await admin.call("listUsers", { phonePrefix: "4477%" }, asOperator(operatorToken));
      expect(fieldsOf(badPhone.error!)).to.deep.equal(["phone_prefix"]);
      const badToken = await admin.call("listUsers", { pageToken: "garbage" }, asOperator(operatorToken));
      expect(fieldsOf(badToken.error!)).to.deep.equal(["page_token"]);
      const tooBig = await admin.call("listUsers", { kycLevel: 4 }, asOperator(operatorToken));
      expect(fieldsOf(tooBig.error!)).to.deep.equal(["kyc_level"]);
    });
  });

  describe("lockouts", () => {
    it("shows an account's lock status after wrong passwords, and unlocking it lets the owner sign in again", async () => {
      const email = `locked.${randomBytes(4).toString("hex")}@example.com`;
      const { userId } = await register(email);
      const admin = adminOn(b);
      const lockStatus = async () => (await admin.call("getUser", { userId }, asOperator(operatorToken))).response!.user!.lockStatus!;

      for (let i = 0; i < 2; i++) await login(email, wrongPassword, "203.0.113.1");
      const guessed = await lockStatus();
      expect(guessed).to.deep.include({ locked: false, lockedSourceCount: 0, failedSignIns: 2 });
      expect(guessed.lockedUntil).to.equal(undefined);
      await login(email, wrongPassword, "203.0.113.1");
      expect(await lockStatus(), "locked for that source").to.deep.include({ locked: false, lockedSourceCount: 1, failedSignIns: 3 });
      await login(email, wrongPassword, "203.0.113.2");
      const everywhere = await lockStatus();
      expect(everywhere, "the fourth from all sources locks the account").to.deep.include({ locked: true, lockedSourceCount: 1, failedSignIns: 0 });
      expect(timestampDate(everywhere.lockedUntil!).getTime()).to.be.greaterThan(Date.now());
      expect((await login(email, password, "192.0.2.50")).error?.code, "the owner, with the right password").to.equal(grpc.status.UNAUTHENTICATED);

      const unlocked = await adminOn(a).call("unlockUser", { userId }, asOperator(operatorToken));
      expect(unlocked.response?.wasLocked).to.equal(true);
      expect((await login(email, password, "203.0.113.1")).error, "even from the source that guessed").to.equal(undefined);
      const after = (await admin.call("getUser", { userId }, asOperator(operatorToken))).response!.user!;
      expect(after.lockStatus).to.deep.include({ locked: false, lockedSourceCount: 0, failedSignIns: 0 });
      expect(after.activeSessionCount).to.equal(2);
      expect((await adminOn(a).call("unlockUser", { userId }, asOperator(operatorToken))).response?.wasLocked).to.equal(false);

      expect((await auditedBy(operatorId, userId)).filter((row) => row.event === "account.unlock")).to.deep.equal([
        { event: "account.unlock", outcome: "success", detail: { actor: operatorId, was_locked: true } },
        { event: "account.unlock", outcome: "success", detail: { actor: operatorId, was_locked: false } },
      ]);
    });

    it("answers NOT_FOUND for an account that does not exist, whatever the call", async () => {
      const admin = adminOn(a);
      const userId = randomUUID();
      const answers = [
        await admin.call("getUser", { userId }, asOperator(operatorToken)),
        await admin.call("disableUser", { userId, reason: "x" }, asOperator(operatorToken)),
        await admin.call("enableUser", { userId }, asOperator(operatorToken)),
        await admin.call("unlockUser", { userId }, asOperator(operatorToken)),
        await admin.call("grantPermission", { userId, permission: "kyc.review" }, asOperator(operatorToken)),
        await admin.call("revokePermission", { userId, permission: "kyc.review" }, asOperator(operatorToken)),
      ];
      expect(answers.map((answer) => answer.error?.code)).to.deep.equal(Array(6).fill(grpc.status.NOT_FOUND));
      expect(fieldsOf((await admin.call("getUser", { userId: "nobody" }, asOperator(operatorToken))).error!)).to.deep.equal(["user_id"]);
    });
  });

  describe("disabling and enabling", () => {
    it("signs out every session: the account's very next call is refused on the other instance, and it cannot refresh or sign in", async () => {
      const phone = newPhone();
      const first = (await signInByPhone(a.grpcPort!, sms, phone, "Phone"))!;
      const second = (await signInByPhone(a.grpcPort!, sms, phone, "Tablet"))!;
      const userId = first.user!.userId;

      const disabled = await adminOn(a).call("disableUser", { userId, reason: "  chargeback fraud  " }, asOperator(operatorToken));
      expect(disabled.response?.revokedSessionCount).to.equal(2);
      const refused = await authOn(b).call("getProfile", {}, bearer(first.tokens!.accessToken));
      expect(refused.error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)?.reason).to.equal("SESSION_REVOKED");
      expect((await authOn(b).call("refreshToken", { refreshToken: second.tokens!.refreshToken })).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      const signIn = await signInByPhone(a.grpcPort!, sms, phone).catch((error: grpc.ServiceError) => error);
      expect(signIn).to.be.instanceOf(Error);

      const managed = (await adminOn(b).call("getUser", { userId }, asOperator(operatorToken))).response!.user!;
      expect(managed.activeSessionCount).to.equal(0);
      const disabledAt = timestampDate(managed.disableTime!).getTime();
      const again = await adminOn(b).call("disableUser", { userId, reason: "again" }, asOperator(operatorToken));
      expect(again.response?.revokedSessionCount).to.equal(0);
      const stillDisabledAt = (await adminOn(b).call("getUser", { userId }, asOperator(operatorToken))).response!.user!.disableTime!;
      expect(timestampDate(stillDisabledAt).getTime(), "disabled since the first time").to.equal(disabledAt);

      expect((await adminOn(b).call("enableUser", { userId }, asOperator(operatorToken))).error).to.equal(undefined);
      const back = (await signInByPhone(a.grpcPort!, sms, phone))!;
      expect((await authOn(b).call("getProfile", {}, bearer(back.tokens!.accessToken))).error).to.equal(undefined);
      const history = (await authOn(b).call("listSecurityEvents", {}, bearer(back.tokens!.accessToken))).response!.events;
      expect(
        history.filter((e) => e.type.startsWith("account.")).map((e) => [e.type, e.details, e.ipAddress]),
        "the owner sees what was done, not the operator's reason, nor who they are or where",
      ).to.deep.equal([
        ["account.enable", {}, ""],
        ["account.disable", { revoked_sessions: "0" }, ""],
        ["account.disable", { revoked_sessions: "2" }, ""],
      ]);

      expect((await auditedBy(operatorId, userId)).filter((row) => row.event !== "admin.read")).to.deep.equal([
        { event: "account.disable", outcome: "success", detail: { actor: operatorId, reason: "chargeback fraud", revoked_sessions: 2 } },
        { event: "account.disable", outcome: "success", detail: { actor: operatorId, reason: "again", revoked_sessions: 0 } },
        { event: "account.enable", outcome: "success", detail: { actor: operatorId } },
      ]);
    });

    it("does the same through the gateway, and wants a reason", async () => {
      const user = (await signInByPhone(a.grpcPort!, sms, newPhone()))!;
      const noReason = await connectCall(a.httpPort!, "/portcullis.v1.AdminService/DisableUser", { userId: user.user!.userId, reason: "   " }, asOperator(operatorToken));
      expect(noReason.status).to.equal(400);
      expect(noReason.text).to.contain("reason");
      const disabled = await connectCall(a.httpPort!, "/portcullis.v1.AdminService/DisableUser", { userId: user.user!.userId, reason: "lost phone" }, asOperator(operatorToken));
      expect(disabled.json).to.deep.equal({ revokedSessionCount: 1 });
      const refused = await connectCall(b.httpPort!, "/portcullis.v1.AuthService/GetProfile", {}, bearer(user.tokens!.accessToken));
      expect(refused.status).to.equal(401);
    });
  });

  describe("permissions", () => {
    it("a permission taken away is refused at the holder's very next call on every instance, through both doors, a new instance included", async () => {
      const user = (await signInByPhone(a.grpcPort!, sms, newPhone(), "Reviewer"))!;
      const userId = user.user!.userId;
      const grant = await connectCall(a.httpPort!, "/portcullis.v1.AdminService/GrantPermission", { userId, permission: "kyc.review" }, asOperator(operatorToken));
      expect(grant.json).to.deep.equal({ permissions: ["kyc.review"] });
      expect((await kycOn(b).call("listKycSubmissions", {}, bearer(user.tokens!.accessToken))).error?.code, "before a refresh").to.equal(
        grpc.status.PERMISSION_DENIED,
      );
      const reviewerToken = (await authOn(b).call("refreshToken", { refreshToken: user.tokens!.refreshToken })).response!.tokens!.accessToken;
      expect((await kycOn(b).call("listKycSubmissions", {}, bearer(reviewerToken))).error).to.equal(undefined);

      const revoke = await connectCall(a.httpPort!, "/portcullis.v1.AdminService/RevokePermission", { userId, permission: "kyc.review" }, asOperator(operatorToken));
      expect(revoke.status).to.equal(200);
      expect(revoke.json.permissions ?? []).to.deep.equal([]);
      const refused = await kycOn(b).call("listKycSubmissions", {}, bearer(reviewerToken));
      expect(refused.error?.code, "the very next call, on the other instance").to.equal(grpc.status.PERMISSION_DENIED);
      expect(detailOf(grpcErrorDetails(refused.error!), ErrorInfoSchema)).to.deep.include({ reason: "PERMISSION_REQUIRED" });
      const viaGateway = await connectCall(b.httpPort!, "/portcullis.v1.KycService/ListKycSubmissions", {}, bearer(reviewerToken));
      expect(viaGateway.status).to.equal(403);

      // An instance started after the change learns of it from Postgres.
      const c = await startPlatform(platform.env);
      try {
        const onNew = grpcClient(KycService, c.grpcPort!);
        expect((await onNew.call("listKycSubmissions", {}, bearer(reviewerToken))).error?.code).to.equal(grpc.status.PERMISSION_DENIED);
        expect((await onNew.call("getKycStatus", {}, bearer(reviewerToken))).error, "the rest of the token still works").to.equal(undefined);
        onNew.close();
      } finally {
        await c.stop();
      }

      const unknown = await adminOn(a).call("grantPermission", { userId, permission: "root" }, asOperator(operatorToken));
      expect(fieldsOf(unknown.error!)).to.deep.equal(["permission"]);
      expect(await auditedBy(operatorId, userId)).to.deep.equal([
        { event: "permission.grant", outcome: "success", detail: { actor: operatorId, permission: "kyc.review" } },
        { event: "permission.revoke", outcome: "success", detail: { actor: operatorId, permission: "kyc.review" } },
      ]);
    });

    it("reaches a service behind the Portcullis guard through Redis at its next call", async () => {
      const listed: UnaryHandler = async () => ({});
      // Its callers here hold tokens for Portcullis itself.
      const guarded = await serveBehindGuard(a, platform.stores, new Map([[KycService.method.listKycSubmissions, listed]]), { name: "kyc-desk", audiences: ["portcullis"] });
      const downstream = grpcClient(KycService, guarded.port);
      try {
        const user = (await signInByPhone(a.grpcPort!, sms, newPhone(), "Reviewer"))!;
        await adminOn(a).call("grantPermission", { userId: user.user!.userId, permission: "kyc.review" }, asOperator(operatorToken));
        const token = (await authOn(a).call("refreshToken", { refreshToken: user.tokens!.refreshToken })).response!.tokens!.accessToken;
        expect((await downstream.call("listKycSubmissions", {}, bearer(token))).error).to.equal(undefined);
        await adminOn(b).call("revokePermission", { userId: user.user!.userId, permission: "kyc.review" }, asOperator(operatorToken));
        const refused = await downstream.call("listKycSubmissions", {}, bearer(token));
        expect(refused.error?.code).to.equal(grpc.status.PERMISSION_DENIED);
      } finally {
        downstream.close();
        await guarded.close();
      }
    });
  });

  describe("ListAuditEvents", () => {
    it("reads one account's rows newest first, page by page (rows written together included), by event and time range", async () => {
      const email = `audited.${randomBytes(4).toString("hex")}@example.com`;
      const { userId } = await register(email);
      // The third wrong password writes its failure and the lock in one statement: two rows with one time.
      for (let i = 0; i < 3; i++) await login(email, wrongPassword, "203.0.113.9");
      const admin = adminOn(a);
      await admin.call("unlockUser", { userId }, asOperator(operatorToken));
      await admin.call("disableUser", { userId, reason: "audit trail" }, asOperator(operatorToken));
      await admin.call("enableUser", { userId }, asOperator(operatorToken));
      const { rows } = await platform.db.query("select id::text, event_time from audit_event where user_id = $1 order by event_time desc, id desc", [userId]);

      const paged: string[] = [];
      let pageToken = "";
      do {
        const page = await admin.call("listAuditEvents", { userId, pageSize: 1, pageToken }, asOperator(operatorToken));
        expect(page.error).to.equal(undefined);
        paged.push(...page.response!.events.map((event) => event.eventId));
        pageToken = page.response!.nextPageToken;
      } while (pageToken);
      expect(paged).to.deep.equal(rows.map((row) => row.id));

      const unlocks = (await admin.call("listAuditEvents", { userId, event: "account.unlock" }, asOperator(operatorToken))).response!.events;
      expect(unlocks).to.have.length(1);
      expect(unlocks[0]).to.deep.include({ event: "account.unlock", outcome: "success", userId, details: { actor: operatorId, was_locked: "true" } });
      expect(unlocks[0]!.requestId).to.not.equal("");

      const disable = (await admin.call("listAuditEvents", { userId, event: "account.disable" }, asOperator(operatorToken))).response!.events[0]!;
      expect(disable.details).to.deep.equal({ actor: operatorId, reason: "audit trail", revoked_sessions: "1" });
      const [startTime, endTime] = [unlocks[0]!.time!, disable.time!];
      const ranged = (await admin.call("listAuditEvents", { userId, startTime, endTime }, asOperator(operatorToken))).response!.events;
      const expected = await platform.db.query(
        "select id::text from audit_event where user_id = $1 and event_time >= $2 and event_time < $3 order by event_time desc, id desc",
        [userId, timestampDate(startTime), timestampDate(endTime)],
      );
      expect(ranged.map((event) => event.eventId)).to.deep.equal(expected.rows.map((row) => row.id));
      expect(ranged.map((event) => event.event), "from the unlock (inclusive) to the disable (exclusive)").to.include("account.unlock").and.not.include("account.disable");
    });

    it("is read through the gateway too, is itself audited, and checks its filters", async () => {
      const since = new Date(Date.now() - 60_000).toISOString();
      const viaGateway = await connectCall(
        b.httpPort!,
        "/portcullis.v1.AdminService/ListAuditEvents",
        { event: "admin.read", startTime: since, pageSize: 5 },
        asOperator(operatorToken),
      );
      expect(viaGateway.status).to.equal(200);
      expect(viaGateway.json.events.length).to.be.within(1, 5);
      expect(viaGateway.json.events.every((event: { details: { actor?: string } }) => event.details.actor)).to.equal(true);
      const reads = await platform.db.query("select detail from audit_event where event = 'admin.read' and detail->>'call' = 'list_audit_events' order by id desc limit 1");
      expect(reads.rows[0].detail).to.deep.equal({ actor: operatorId, call: "list_audit_events", filter: "event,start_time" });

      const admin = adminOn(a);
      const now = new Date();
      const backwards = await admin.call("listAuditEvents", { startTime: timestampFromDate(now), endTime: timestampFromDate(now) }, asOperator(operatorToken));
      expect(fieldsOf(backwards.error!)).to.deep.equal(["end_time"]);
      const notAUser = await admin.call("listAuditEvents", { userId: "someone" }, asOperator(operatorToken));
      expect(fieldsOf(notAUser.error!)).to.deep.equal(["user_id"]);
      const usersToken = (await admin.call("listUsers", { pageSize: 1 }, asOperator(operatorToken))).response!.nextPageToken;
      const wrongToken = await admin.call("listAuditEvents", { pageToken: usersToken }, asOperator(operatorToken));
      expect(fieldsOf(wrongToken.error!), "another listing's token").to.deep.equal(["page_token"]);
    });

    it("audits every read an operator makes, naming them and the kind of filter, never its value", async () => {
      const tag = randomBytes(4).toString("hex");
      const admin = adminOn(a);
      await admin.call("listUsers", { emailPrefix: `secret.${tag}`, status: UserStatus.ACTIVE }, asOperator(operatorToken));
      await admin.call("getUser", { userId: operatorId }, asOperator(operatorToken));
      const { rows } = await platform.db.query("select user_id, detail from audit_event where event = 'admin.read' order by id desc limit 2");
      expect(rows.reverse()).to.deep.equal([
        { user_id: null, detail: { actor: operatorId, call: "list_users", filter: "email_prefix,status" } },
        { user_id: operatorId, detail: { actor: operatorId, call: "get_user" } },
      ]);
      const leaked = await platform.db.query("select count(*)::int as n from audit_event where detail::text like $1", [`%${tag}%`]);
      expect(leaked.rows[0].n).to.equal(0);
    });
  });

  describe("the command-line tool", function () {
    // Each run is a new process that loads the whole code base: about 3 s.
    this.timeout(90_000);

    /** As an operator runs it on a server: the deployment's stores, and no SMS or email settings at all. */
    async function cli(...args: string[]) {
      return cliWith({}, ...args);
    }

    async function cliWith(overrides: Record<string, string>, ...args: string[]) {
      const { SMS_PROVIDER, EMAIL_PROVIDER, SMS_WEBHOOK_URL, EMAIL_WEBHOOK_URL, ...rest } = process.env;
      try {
        const { stdout, stderr } = await promisify(execFile)("node_modules/.bin/tsx", ["services/admin/cli.ts", ...args], {
          env: { ...rest, ...platform.stores, LOG_LEVEL: "silent", ...overrides },
        });
        return { code: 0, stdout, stderr };
      } catch (error) {
        const failed = error as { code: number; stdout: string; stderr: string };
        return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
      }
    }

    it("bootstraps without SMS or email settings, names the operating-system user in the audit log, and a revoke reaches the next call", async () => {
      const phone = newPhone();
      const user = (await signInByPhone(a.grpcPort!, sms, phone, "Reviewer"))!;
      const userId = user.user!.userId;
      const granted = await cli("grant", phone, "kyc.review");
      expect(granted.stdout).to.match(/granted kyc\.review/);
      expect(granted.stderr).to.equal("");
      const token = (await authOn(a).call("refreshToken", { refreshToken: user.tokens!.refreshToken })).response!.tokens!.accessToken;
      expect((await kycOn(b).call("listKycSubmissions", {}, bearer(token))).error).to.equal(undefined);

      const revoked = await cli("revoke", phone, "kyc.review");
      expect(revoked.stdout).to.match(/revoked kyc\.review .*effective at the user's next call/);
      expect(revoked.stderr).to.equal("");
      expect((await kycOn(b).call("listKycSubmissions", {}, bearer(token))).error?.code).to.equal(grpc.status.PERMISSION_DENIED);

      const actor = `os:${userInfo().username}`;
      expect(await auditedBy(actor, userId)).to.deep.equal([
        { event: "permission.grant", outcome: "success", detail: { actor, permission: "kyc.review" } },
        { event: "permission.revoke", outcome: "success", detail: { actor, permission: "kyc.review" } },
      ]);
    });

    it("takes a permission away in Postgres when Redis cannot be reached: it warns, and instances still refuse it", async () => {
      const phone = newPhone();
      const user = (await signInByPhone(a.grpcPort!, sms, phone, "Reviewer"))!;
      await adminOn(a).call("grantPermission", { userId: user.user!.userId, permission: "kyc.review" }, asOperator(operatorToken));
      const token = (await authOn(a).call("refreshToken", { refreshToken: user.tokens!.refreshToken })).response!.tokens!.accessToken;
      expect((await kycOn(b).call("listKycSubmissions", {}, bearer(token))).error).to.equal(undefined);

      const revoked = await cliWith({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` }, "revoke", phone, "kyc.review");
      expect(revoked.code).to.equal(0);
      expect(revoked.stdout).to.match(/revoked kyc\.review/);
      expect(revoked.stderr).to.match(/warning: could not reach Redis .*from Postgres within about a second/);
      // Heard of only by re-reading Postgres, once a second.
      const deadline = Date.now() + 5000;
      let refused: grpc.ServiceError | undefined;
      while (!refused && Date.now() < deadline) {
        refused = (await kycOn(b).call("listKycSubmissions", {}, bearer(token))).error;
        if (!refused) await sleep(50);
      }
      expect(refused?.code).to.equal(grpc.status.PERMISSION_DENIED);
    });

    it("unlocks an account, and lists every command and permission it knows", async () => {
      const email = `cli.${randomBytes(4).toString("hex")}@example.com`;
      const { userId } = await register(email);
      for (let i = 0; i < 3; i++) await login(email, wrongPassword, "203.0.113.77");
      expect((await login(email, password, "203.0.113.77")).error?.code).to.equal(grpc.status.UNAUTHENTICATED);
      expect((await cli("unlock", email)).stdout).to.match(/^unlocked /);
      expect((await login(email, password, "203.0.113.77")).error).to.equal(undefined);
      expect((await cli("unlock", email)).stdout).to.match(/was not locked out/);
      const actor = `os:${userInfo().username}`;
      expect((await auditedBy(actor, userId)).map((row) => row.detail)).to.deep.equal([
        { actor, was_locked: true },
        { actor, was_locked: false },
      ]);

      const usage = await cli();
      expect(usage.code).to.equal(2);
      expect(usage.stderr).to.contain("unlock  <user>").and.contain("one taken away stops working at the user's next call");
      const typo = await cli("grant", email, "kyc.reviewer");
      expect(typo.code).to.equal(2);
      expect(typo.stderr).to.contain(`known: ${knownPermissions.join(", ")}`);
    });

    it("knows exactly the permissions the contract allows to grant and revoke", () => {
      for (const schema of [GrantPermissionRequestSchema, RevokePermissionRequestSchema]) {
        const rules = getOption(schema.field.permission!, fieldRules);
        expect(rules.type.case, schema.typeName).to.equal("string");
        expect(rules.type.case === "string" && rules.type.value.in, schema.typeName).to.deep.equal([...knownPermissions]);
      }
    });
  });
});
