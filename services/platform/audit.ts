import type { EntityManager } from "@mikro-orm/postgresql";

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
 * Appends to the audit log. Pass the transaction's EntityManager so the event
 * commits (or rolls back) with the change it describes.
 */
export async function audit(em: EntityManager, origin: AuditOrigin, entry: AuditEntry): Promise<void> {
  await em.execute(
    `insert into audit_event (event, outcome, user_id, session_id, ip_address, user_agent, request_id, detail)
     values (?, ?, ?, ?, ?, ?, ?, ?)`,
    [
      entry.event,
      entry.outcome,
      entry.userId ?? null,
      entry.sessionId ?? null,
      origin.clientIp,
      origin.userAgent.slice(0, 512),
      origin.requestId,
      JSON.stringify(entry.detail ?? {}),
    ],
  );
}
