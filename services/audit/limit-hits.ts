import type { LimitHit } from "../kernel/call.js";
import type { Database } from "../platform/database.js";
import type { Logger } from "../platform/logger.js";
import { audit } from "./store.js";

const quietMs = 60_000;
const maxTracked = 10_000;

/**
 * Writes rate-limit hits to the audit log, at most one row per rule and key a
 * minute: a flood of refused calls must not become a flood of inserts.
 */
export function auditLimitHits(db: Database, logger: Logger): (hit: LimitHit) => void {
  const quietUntil = new Map<string, number>();
  return (hit) => {
    const now = Date.now();
    const id = `${hit.rule}:${hit.key}`;
    if ((quietUntil.get(id) ?? 0) > now) return;
    if (quietUntil.size >= maxTracked) quietUntil.clear();
    quietUntil.set(id, now + quietMs);
    audit(db, hit, { event: "rate_limit.hit", outcome: "denied", userId: hit.userId, detail: { rule: hit.rule } }).catch(
      (error) => logger.error({ err: error }, "could not audit a rate-limit hit"),
    );
  };
}
