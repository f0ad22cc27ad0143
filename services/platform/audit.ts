import type { Sql } from "./database.js";

/** Who did it, from where: taken from the call, never a code, password or token. */
export interface AuditOrigin {
  clientIp: string;
  userAgent: string;
  requestId: string;
}

export interface AuditEntry {
  event: string;
  outcome: "success" | "failure" | "denied";
  userId?: string;
  sessionId?: string;
  /** Small facts about the event (counts, reasons, masked numbers). */
  detail?: Record<string, string | number | boolean>;
}

/**
 * Appends to the audit log. Pass the transaction so the event commits (or
 * rolls back) with the change it describes.
 */
export async function audit(sql: Sql, origin: AuditOrigin, entry: AuditEntry): Promise<void> {
  await sql.query(
    `insert into audit_event (event, outcome, user_id, session_id, ip_address, user_agent, request_id, detail)
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
