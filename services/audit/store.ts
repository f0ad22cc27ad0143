import type { Sql } from "../platform/database.js";
import type { CallOrigin } from "../kernel/call.js";
import { pageTimeSql } from "../kernel/pagination.js";

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

/** A row of the audit log as operators read it. */
export interface AuditRow {
  id: string;
  event_time: Date;
  /** event_time to the microsecond, where the next page starts. */
  page_time: string;
  event: string;
  outcome: string;
  user_id: string | null;
  session_id: string | null;
  ip_address: string | null;
  user_agent: string | null;
  request_id: string | null;
  detail: Record<string, unknown>;
}

/** Which rows an operator reads; every filter given must hold. */
export interface AuditFilter {
  userId?: string;
  event?: string;
  /** Inclusive. */
  since?: Date;
  /** Exclusive. */
  before?: Date;
}

/** Newest first (event_time, id), from after `after` (a page_time and an id) on. */
export function listAuditEvents(sql: Sql, filter: AuditFilter, after: [string, string] | undefined, limit: number): Promise<AuditRow[]> {
  const params: unknown[] = [];
  const param = (value: unknown) => `$${params.push(value)}`;
  // Only the filters given, so each combination is its own statement and its own plan.
  const conditions: string[] = [];
  if (filter.userId !== undefined) conditions.push(`user_id = ${param(filter.userId)}::uuid`);
  if (filter.event !== undefined) conditions.push(`event = ${param(filter.event)}`);
  if (filter.since) conditions.push(`event_time >= ${param(filter.since)}`);
  if (filter.before) conditions.push(`event_time < ${param(filter.before)}`);
  if (after) conditions.push(`(event_time, id) < (${param(after[0])}::timestamptz, ${param(after[1])}::bigint)`);
  return sql.query<AuditRow>(
    `select id::text, event_time, ${pageTimeSql("event_time")} as page_time,
            event, outcome, user_id, session_id, ip_address, user_agent, request_id, detail
     from audit_event ${conditions.length > 0 ? `where ${conditions.join(" and ")}` : ""}
     order by event_time desc, id desc limit ${param(limit)}`,
    params,
  );
}

/** A row of the audit log as its user's security events show it. */
export interface UserEventRow {
  id: string;
  event_time: Date;
  /** event_time to the microsecond, where the next page starts. */
  page_time: string;
  event: string;
  outcome: string;
  session_id: string | null;
  ip_address: string | null;
  user_agent: string | null;
  detail: Record<string, unknown>;
}

/** A user's events of the kinds in `events`, newest first (event_time, id), from after `after` (a page_time and an id) on. */
export function listUserEvents(sql: Sql, userId: string, events: readonly string[], after: [string, string] | undefined, limit: number): Promise<UserEventRow[]> {
  return sql.query<UserEventRow>(
    `select id::text, event_time, ${pageTimeSql("event_time")} as page_time,
            event, outcome, session_id, ip_address, user_agent, detail
     from audit_event
     where user_id = $1 and event = any($2::text[]) and ($3::timestamptz is null or (event_time, id) < ($3, $4::bigint))
     order by event_time desc, id desc limit $5`,
    [userId, events, after?.[0] ?? null, after?.[1] ?? null, limit],
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
