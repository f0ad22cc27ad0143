import { audit, listAuditEvents, type AuditFilter } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { pageOf } from "../kernel/pagination.js";
import type { Database } from "../platform/database.js";
import { filtersUsed, type Actor } from "./accounts.js";

const filterNames: Record<keyof AuditFilter, string> = { userId: "user_id", event: "event", since: "start_time", before: "end_time" };

/** Operators' reading of the audit log; each reading is itself audited, in the same transaction. */
export class AuditLog {
  constructor(private readonly db: Database) {}

  /** A page of rows, newest first, and the token of the next page ("" after the last). */
  list(actor: Actor, filter: AuditFilter, pageSize: number, after: [string, string] | undefined, origin: CallOrigin) {
    return this.db.transaction(async (tx) => {
      const { page, nextPageToken } = pageOf(await listAuditEvents(tx, filter, after, pageSize + 1), pageSize);
      await audit(tx, origin, {
        event: "admin.read",
        outcome: "success",
        userId: filter.userId,
        detail: { actor, call: "list_audit_events", filter: filtersUsed(filter, filterNames) },
      });
      return { page, nextPageToken };
    });
  }
}
