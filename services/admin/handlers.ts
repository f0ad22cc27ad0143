import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AuditRow } from "../audit/store.js";
import { normalizeEmail } from "../auth/email.js";
import { decodeNamePageToken, encodeNamePageToken, type ServiceAccount, type ServiceAccounts } from "../clients/service-accounts.js";
import type { ServiceCredentialRow } from "../clients/store.js";
import type { ServiceHandlers } from "../kernel/call.js";
import { decodeExactPageToken, pageSizeOf } from "../kernel/pagination.js";
import { textProblem, Violations } from "../kernel/validation.js";
import type { UserFilter } from "../users/store.js";
import { userMessage } from "../users/user.js";
import {
  AdminService,
  ServiceCredentialKind,
  UserStatus,
  type AuditEventSchema,
  type ManagedUserSchema,
  type ServiceAccountSchema,
  type ServiceCredentialSchema,
} from "../../gen/portcullis/v1/admin_service_pb.js";
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

const credentialKinds = { public_key: ServiceCredentialKind.PUBLIC_KEY, client_secret: ServiceCredentialKind.CLIENT_SECRET };

function serviceCredentialMessage(credential: ServiceCredentialRow): MessageInitShape<typeof ServiceCredentialSchema> {
  return {
    credentialId: credential.id,
    kind: credentialKinds[credential.kind],
    keyId: credential.key_id ?? "",
    createTime: timestampFromDate(credential.create_time),
    lastUseTime: credential.last_use_time ? timestampFromDate(credential.last_use_time) : undefined,
  };
}

function serviceAccountMessage(account: ServiceAccount): MessageInitShape<typeof ServiceAccountSchema> {
  return {
    name: account.name,
    audiences: account.audiences,
    permissions: account.permissions,
    createTime: timestampFromDate(account.create_time),
    disableTime: account.disable_time ? timestampFromDate(account.disable_time) : undefined,
    credentials: account.credentials.map(serviceCredentialMessage),
  };
}

export function adminHandlers(accounts: Accounts, auditLog: AuditLog, serviceAccounts: ServiceAccounts): ServiceHandlers<typeof AdminService> {
  return {
    async createServiceAccount(request, call) {
      const created = await serviceAccounts.create(call.principal!.subject, request.name, request.audiences, request.permissions, call);
      return { serviceAccount: serviceAccountMessage(created) };
    },

    async listServiceAccounts(request, call) {
      const after = request.pageToken ? decodeNamePageToken(request.pageToken) : undefined;
      const { page, next } = await serviceAccounts.list(call.principal!.subject, pageSizeOf(request.pageSize), after, call);
      return { serviceAccounts: page.map(serviceAccountMessage), nextPageToken: next ? encodeNamePageToken(next) : "" };
    },

    async disableServiceAccount(request, call) {
      await serviceAccounts.disable(call.principal!.subject, request.name, call);
      return {};
    },

    async addServiceCredential(request, call) {
      const actor = call.principal!.subject;
      // The contract lets exactly one of the two through.
      if (request.publicKeyJwk) {
        return { credential: serviceCredentialMessage(await serviceAccounts.addPublicKey(actor, request.name, request.publicKeyJwk, call)) };
      }
      const { credential, secret } = await serviceAccounts.addSecret(actor, request.name, call);
      return { credential: serviceCredentialMessage(credential), clientSecret: secret };
    },

    async revokeServiceCredential(request, call) {
      await serviceAccounts.revokeCredential(call.principal!.subject, request.name, request.credentialId, call);
      return {};
    },

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
      const { page, nextPageToken } = await accounts.list(call.principal!.subject, filter, pageSizeOf(request.pageSize), after, call);
      return { users: page.map(managedUserMessage), nextPageToken };
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
      const { page, nextPageToken } = await auditLog.list(call.principal!.subject, filter, pageSizeOf(request.pageSize), after, call);
      return { events: page.map(auditEventMessage), nextPageToken };
    },
  };
}
