import type { CaptchaRefusal, LimitHit } from "../kernel/call.js";
import type { Database } from "../platform/database.js";
import type { Background } from "../platform/background.js";
import { audit } from "./store.js";

const quietMs = 60_000;
const maxTracked = 10_000;

/**
 * Writes rate-limit hits to the audit log, at most one row per rule and key a
 * minute: a flood of refused calls must not become a flood of inserts. The
 * refusal does not wait for the row; shutdown does.
 */
export function auditLimitHits(db: Database, background: Background): (hit: LimitHit) => void {
  const first = firstInAMinute();
  return (hit) => {
    if (!first(`${hit.rule}:${hit.key}`)) return;
    background.run("rate-limit hit audit", () => audit(db, hit, { event: "rate_limit.hit", outcome: "denied", userId: hit.userId, detail: { rule: hit.rule } }));
  };
}

/** Captcha refusals, likewise at most one row a minute per method, IP and cause: a bot without tokens is refused on every call. */
export function auditCaptchaRefusals(db: Database, background: Background): (refusal: CaptchaRefusal) => void {
  const first = firstInAMinute();
  return (refusal) => {
    if (!first(`${refusal.method}:${refusal.clientIp}:${refusal.cause}`)) return;
    const detail = { method: refusal.method, provider: refusal.provider, cause: refusal.cause };
    background.run("captcha refusal audit", () => audit(db, refusal, { event: "captcha.refused", outcome: "denied", detail }));
  };
}

/** Whether `id` was last seen more than a minute ago (or never), counting this time as seen. */
function firstInAMinute(): (id: string) => boolean {
  const quietUntil = new Map<string, number>();
  return (id) => {
    const now = Date.now();
    if ((quietUntil.get(id) ?? 0) > now) return false;
    if (quietUntil.size >= maxTracked) quietUntil.clear();
    quietUntil.set(id, now + quietMs);
    return true;
  };
}
