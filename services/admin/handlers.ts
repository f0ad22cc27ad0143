import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AuditRow } from "../audit/store.js";
import { normalizeEmail } from "../auth/email.js";
import type { ServiceHandlers } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import { decodeExactPageToken, encodePageToken, pageSizeOf } from "../kernel/pagination.js";
import { textProblem, Violations } from "../kernel/validation.js";
import type { UserFilter } from "../users/store.js";
import { userMessage } from "../users/user.js";
import { AdminService, UserStatus, type AuditEventSchema, type ManagedUserSchema } from "../../gen/portcullis/v1/admin_service_pb.js";
import type { Accounts, ManagedUser } from "./accounts.js";
import type { AuditLog } from "./audit-log.js";

const statusFilter: Record<UserStatus, UserFilter["status"]> = {
  [UserStatus.UNSPECIFIED]: undefined,
  [UserStatus.ACTIVE]: "active",
  [UserStatus.DISABLED]: "disabled",
  [UserStatus.LOCKED]: "locked",
};

function managedUserMessage(user: ManagedUser): MessageInitShape<typeof ManagedUserSchema> {
  return {
    user: userMessage(user),
    permissions: user.permissions,
    disableTime: user.disable_time ? timestampFromDate(user.disable_time) : undefined,
    lockStatus: {
      locked: user.locked,
      lockedUntil: user.locked_until ? timestampFromDate(user.locked_until) : undefined,
      lockedSourceCount: user.locked_source_count,
      failedSignIns: user.failed_logins,
    },
    activeSessionCount: user.activeSessions,
  };
}

function auditEventMessage(row: AuditRow): MessageInitShape<typeof AuditEventSchema> {
  return {
    eventId: row.id,
    time: timestampFromDate(row.event_time),
    event: row.event,
    outcome: row.outcome,
    userId: row.user_id ?? "",
    sessionId: row.session_id ?? "",
    ipAddress: row.ip_address ?? "",
    userAgent: row.user_agent ?? "",
    requestId: row.request_id ?? "",
    details: Object.fromEntries(Object.entries(row.detail).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)])),
  };
}

/** A Timestamp's valid range (seconds can reach far past it, and past what Postgres accepts). */
function timeProblem(time: Date): string | undefined {
  const year = time.getUTCFullYear();
  return Number.isNaN(year) || year < 1 || year > 9999 ? "must be between the years 1 and 9999" : undefined;
}

const notYet = async (): Promise<never> => {
  throw new ConnectError("not built yet", Code.Unimplemented);
};

export function adminHandlers(accounts: Accounts, auditLog: AuditLog): ServiceHandlers<typeof AdminService> {
  return {
    createServiceAccount: notYet,
    listServiceAccounts: notYet,
    disableServiceAccount: notYet,
    addServiceCredential: notYet,
    revokeServiceCredential: notYet,
    async listUsers(request, call) {
      const emailPrefix = normalizeEmail(request.emailPrefix);
      new Violations().add("email_prefix", textProblem(emailPrefix, 0, 254)).throwIfAny();
      const filter: UserFilter = {
        emailPrefix: emailPrefix || undefined,
        phonePrefix: request.phonePrefix || undefined,
        status: statusFilter[request.status],
        kycLevel: request.kycLevel,
      };
      const after = request.pageToken ? decodeExactPageToken(request.pageToken) : undefined;
      const { page, next } = await accounts.list(call.principal!.subject, filter, pageSizeOf(request.pageSize), after, call);
      return { users: page.map(managedUserMessage), nextPageToken: next ? encodePageToken(...next) : "" };
    },

    async getUser(request, call) {
      return { user: managedUserMessage(await accounts.get(call.principal!.subject, request.userId, call)) };
    },

    async disableUser(request, call) {
      const reason = request.reason.trim();
      new Violations().add("reason", textProblem(reason, 1, 500)).throwIfAny();
      return { revokedSessionCount: await accounts.disable(call.principal!.subject, request.userId, reason, call) };
    },

    async enableUser(request, call) {
      await accounts.enable(call.principal!.subject, request.userId, call);
      return {};
    },

    async unlockUser(request, call) {
      return { wasLocked: await accounts.unlock(call.principal!.subject, request.userId, call) };
    },

    async grantPermission(request, call) {
      return { permissions: await accounts.grant(call.principal!.subject, request.userId, request.permission, call) };
    },

    async revokePermission(request, call) {
      return { permissions: await accounts.revoke(call.principal!.subject, request.userId, request.permission, call) };
    },

    async listAuditEvents(request, call) {
      const event = request.event.trim();
      const since = request.startTime && timestampDate(request.startTime);
      const before = request.endTime && timestampDate(request.endTime);
      new Violations()
        .add("event", textProblem(event, 0, 64))
        .add("start_time", since && timeProblem(since))
        .add("end_time", before && (timeProblem(before) ?? (since && before <= since ? "must be after start_time" : undefined)))
        .throwIfAny();
      const filter = { userId: request.userId || undefined, event: event || undefined, since, before };
      const after = request.pageToken ? decodeExactPageToken(request.pageToken, "bigint") : undefined;
      const { page, next } = await auditLog.list(call.principal!.subject, filter, pageSizeOf(request.pageSize), after, call);
      return { events: page.map(auditEventMessage), nextPageToken: next ? encodePageToken(...next) : "" };
    },
  };
}
