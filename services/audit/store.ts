import type { Sql } from "../platform/database.js";
import type { CallOrigin } from "../kernel/call.js";

/**
 * The audit log (table audit_event): every security event, with time, actor,
 * IP, user agent and request id; never a code, password or whole token. The
 * only writer of the table; batched statements of other stores take their
 * insert from `insertAuditEvents`.
 */

export interface AuditEntry {
  event: string;
  outcome: "success" | "failure" | "denied";
  userId?: string;
  sessionId?: string;
  /** Small facts about the event (counts, reasons, masked numbers). */
  detail?: Record<string, string | number | boolean>;
}

/** Appends to the audit log. Pass the transaction so the event commits (or rolls back) with the change it describes. */
export async function audit(sql: Sql, origin: CallOrigin, entry: AuditEntry): Promise<void> {
  await sql.query(
    `${insertAuditEvents(["event", "outcome", "user_id", "session_id", "ip_address", "user_agent", "request_id", "detail"])}
     values ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      entry.event,
      entry.outcome,
      entry.userId ?? null,
      entry.sessionId ?? null,
      origin.clientIp,
      origin.userAgent,
      origin.requestId,
      JSON.stringify(entry.detail ?? {}),
    ],
  );
}

export type AuditColumn = "event" | "outcome" | "user_id" | "session_id" | "ip_address" | "user_agent" | "request_id" | "detail";

/**
 * The head of an insert into the audit log, for a statement that audits the
 * rows it changes in the same statement (a batch, or a failure that must cost
 * what success costs); follow it with `values …` or a select of `columns`.
 */
export function insertAuditEvents(columns: readonly AuditColumn[]): string {
  return `insert into audit_event (${columns.join(", ")})`;
}
