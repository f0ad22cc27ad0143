import { audit, type AuditEntry } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { unavailable } from "../kernel/errors.js";
import type { Database, Sql } from "../platform/database.js";
import { MailDeliveryError } from "./mail.js";
import { SmsDeliveryError } from "./sms.js";

/** How a committed change whose message could not be sent is taken back, and told in the audit log. */
export interface Undo {
  /** The failure's audit row but for its outcome and reason: the change's own event. */
  audit: Omit<AuditEntry, "outcome">;
  /** Takes the change back, in the failure's transaction; none when there is nothing to take back. */
  revert?: (tx: Sql) => Promise<void>;
}

/**
 * Sends the mail or text a committed change is for. It goes out after the
 * commit, never inside a transaction: a slow provider would hold a pooled
 * connection and the user's row lock for as long as it took. If it cannot be
 * sent, `undo` takes the change back and audits why in one transaction, so
 * nothing half-done stays, and a provider's refusal is answered UNAVAILABLE:
 * the person may simply try again.
 */
export async function sendOrUndo(db: Database, origin: CallOrigin, send: () => Promise<void>, undo: Undo): Promise<void> {
  try {
    await send();
  } catch (error) {
    const reason = error instanceof MailDeliveryError ? "mail_provider" : error instanceof SmsDeliveryError ? "sms_provider" : "send_failed";
    await db.transaction(async (tx) => {
      await undo.revert?.(tx);
      await audit(tx, origin, { ...undo.audit, outcome: "failure", detail: { ...undo.audit.detail, reason } });
    });
    if (error instanceof MailDeliveryError) throw unavailable("the mail could not be sent; try again shortly");
    if (error instanceof SmsDeliveryError) throw unavailable("the code could not be sent; try again shortly");
    throw error;
  }
}
