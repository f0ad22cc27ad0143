/**
 * When to create the next signing key, and when to forget old ones: pure
 * decisions over the key ring's timetable, kept apart from storage so they can
 * be tested with any clock.
 */
export interface KeyTimes {
  kid: string;
  activateTime: Date;
  retireTime?: Date | null;
}

export interface SchedulePolicy {
  rotationIntervalSeconds: number;
  publishLeadSeconds: number;
  /** Access-token lifetime plus clock tolerance: how long a retired key still verifies. */
  verifyGraceSeconds: number;
}

/** The key that signs at `now`: the latest one already active. */
export function currentSigningKey<K extends KeyTimes>(keys: K[], now: Date): K | undefined {
  let current: K | undefined;
  for (const key of keys) {
    if (key.activateTime <= now && (!current || key.activateTime > current.activateTime)) current = key;
  }
  return current;
}

/**
 * Whether a new key is due, and when it should start signing. A ring with no
 * key gets one at once (nobody can have cached a JWKS yet); otherwise the next
 * key is created `publishLeadSeconds` before the newest key has signed for a
 * whole interval, so every JWKS cache holds it before its first token.
 */
export function nextKeyActivation(keys: KeyTimes[], now: Date, policy: SchedulePolicy): Date | undefined {
  if (keys.length === 0) return now;
  const newest = keys.reduce((a, b) => (a.activateTime > b.activateTime ? a : b));
  if (newest.activateTime > now) return undefined;
  const due = newest.activateTime.getTime() + policy.rotationIntervalSeconds * 1000;
  if (due - policy.publishLeadSeconds * 1000 > now.getTime()) return undefined;
  return new Date(Math.max(due, now.getTime() + policy.publishLeadSeconds * 1000));
}

/** Keys whose every token has expired: safe to remove from the JWKS and the table. */
export function isExpired(key: KeyTimes, now: Date, policy: SchedulePolicy): boolean {
  return !!key.retireTime && key.retireTime.getTime() + policy.verifyGraceSeconds * 1000 < now.getTime();
}
