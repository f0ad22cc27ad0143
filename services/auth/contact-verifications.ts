import { randomUUID } from "node:crypto";
import { audit, type AuditEntry } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import { userStore } from "../users/store.js";
import { contactVerificationStore, type ContactChannel } from "./contact-verification-store.js";

/**
 * What proving an email address (email-verification.ts) and a phone number
 * (contact-change.ts) share, around the contact_verification store.
 */

/** A verification committed before its code is sent: what taking it back needs if the code cannot be sent. */
export interface OpenedVerification {
  id: string;
  userId: string;
  /** The user's verification it closed, which works again if this one is withdrawn. */
  replaced: string | undefined;
  expireTime: Date;
}

/**
 * Opens a verification of `address` for the user in `tx`, in place of their
 * open one on the channel, under the user's row lock (the caller's); the
 * caller sends the code once `tx` has committed.
 */
export async function openVerification(
  tx: Sql,
  settings: Pick<Config["account"], "verificationTtlSeconds" | "codeMaxAttempts" | "codeFailureBudget">,
  verification: { userId: string; channel: ContactChannel; address: string; codeMac: Buffer; linkMac: Buffer | null },
): Promise<OpenedVerification> {
  const id = randomUUID();
  const expireTime = new Date(Date.now() + settings.verificationTtlSeconds * 1000);
  const replaced = await contactVerificationStore.replace(tx, {
    ...verification,
    id,
    maxAttempts: settings.codeMaxAttempts,
    failureBudget: settings.codeFailureBudget,
    expireTime,
  });
  return { id, userId: verification.userId, replaced, expireTime };
}

/** Takes back a verification whose code never reached anyone, under the user's row lock as every opening is. */
export async function withdrawVerification(tx: Sql, opened: OpenedVerification): Promise<void> {
  await userStore.lock(tx, opened.userId);
  await contactVerificationStore.withdraw(tx, opened.id, opened.replaced);
}

/**
 * A proven address that another account holds, found when it was to become
 * the user's (a unique violation): the verification is closed and the refusal
 * audited. The caller proved the address is theirs, so saying another account
 * holds it tells them nothing new. Returns the answer to throw.
 */
export async function refuseTakenAddress(
  db: Database,
  origin: CallOrigin,
  verificationId: string,
  entry: Omit<AuditEntry, "outcome">,
  message: string,
): Promise<ConnectError> {
  await db.transaction(async (tx) => {
    await contactVerificationStore.close(tx, verificationId);
    await audit(tx, origin, { ...entry, outcome: "denied" });
  });
  return new ConnectError(message, Code.AlreadyExists);
}
