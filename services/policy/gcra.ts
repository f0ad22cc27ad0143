/**
 * The generic cell rate algorithm: `limit` requests per `period`, all of them
 * available at once, then one every period/limit. The state is a single
 * number, the theoretical arrival time (TAT). Mirrored by the Lua script in
 * rate-limiter.ts, which runs the same arithmetic atomically in Redis.
 */
export interface GcraDecision {
  allowed: boolean;
  /** The new TAT to store when allowed. */
  tat: number;
  /** When denied: how long until one more request would be allowed. */
  retryAfterMs: number;
}

/** `cost` requests at once: all are allowed, or none. */
export function gcra(storedTat: number | undefined, nowMs: number, limit: number, periodMs: number, cost = 1): GcraDecision {
  const interval = periodMs / limit;
  const tat = Math.max(storedTat ?? nowMs, nowMs) + interval * cost;
  const ahead = tat - nowMs;
  if (ahead > periodMs) return { allowed: false, tat: storedTat ?? nowMs, retryAfterMs: Math.ceil(ahead - periodMs) };
  return { allowed: true, tat, retryAfterMs: 0 };
}
