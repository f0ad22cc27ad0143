import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * Every Prometheus series Portcullis exports, defined in one place so their
 * names, labels and buckets read as one list (the dashboard and the alert
 * rules in ops/ are written against it). Labels take only bounded values:
 * method, door, code, rule, outcome, reason, country code, provider, command —
 * never a user id, phone number, email, IP address or token.
 *
 * One registry per process, as Prometheus scrapes a process: instances started
 * side by side in one process (tests) add to the same series.
 */
export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry });

const registers = [metricsRegistry];
/** Seconds, resolving 1 ms to 500 ms and a little past. */
const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

// Calls

export const rpcCalls = new Counter({
  name: "portcullis_rpc_calls_total",
  help: "Calls answered, by RPC, the door they came in by (grpc, gateway) and status code name",
  labelNames: ["method", "door", "code"] as const,
  registers,
});

export const rpcDuration = new Histogram({
  name: "portcullis_rpc_duration_seconds",
  help: "Time from the chain's start to the answer, by RPC and door",
  labelNames: ["method", "door"] as const,
  buckets: latencyBuckets,
  registers,
});

/** Calls being served now, by door: plain numbers the chain counts, read at each scrape (cheaper than a gauge update twice a call). */
export const callsInFlight = { grpc: 0, gateway: 0 };

export const rpcInFlight = new Gauge({
  name: "portcullis_rpc_in_flight",
  help: "Calls being served now, by door",
  labelNames: ["door"] as const,
  registers,
  collect() {
    for (const [door, calls] of Object.entries(callsInFlight)) this.labels(door).set(calls);
  },
});

// Security signals

export const signIns = new Counter({
  name: "portcullis_sign_ins_total",
  help: "Sign-in attempts by method (otp, pwd) and outcome (success, wrong_secret, locked, disabled, no_code, unknown_account, email_not_verified; mfa_required: the first factor passed and a second is asked (its success counts when VerifyMfa completes it); registered: a password account created, its address yet to confirm; email_taken: a registration with an address in use)",
  labelNames: ["method", "outcome"] as const,
  registers,
});

export const otpSends = new Counter({
  name: "portcullis_otp_sends_total",
  help: "One-time codes asked for, by destination country (ISO code) and outcome (sent, provider_failed, country_budget, prefix_budget, cooldown, failure_budget); numbers refused as invalid are not counted",
  labelNames: ["country", "outcome"] as const,
  registers,
});

export const messageDeliveries = new Histogram({
  name: "portcullis_message_delivery_seconds",
  help: "Time the SMS or email provider took to take a message, by channel, provider and outcome (ok, failed)",
  labelNames: ["channel", "provider", "outcome"] as const,
  buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers,
});

export const rateLimitRefusals = new Counter({
  name: "portcullis_rate_limit_refusals_total",
  help: "Calls refused by a rate limit, by rule",
  labelNames: ["rule"] as const,
  registers,
});

export const lockouts = new Counter({
  name: "portcullis_lockouts_total",
  help: "Lockouts begun, by kind (password_source, password_account, otp_phone)",
  labelNames: ["kind"] as const,
  registers,
});

export const refreshes = new Counter({
  name: "portcullis_refreshes_total",
  help: "Refresh-token presentations by outcome (rotated, retry, reuse_detected, expired, revoked, invalid)",
  labelNames: ["outcome"] as const,
  registers,
});

export const tokensRefused = new Counter({
  name: "portcullis_tokens_refused_total",
  help: "Access tokens refused by the chain, by reason (TOKEN_MISSING, TOKEN_EXPIRED, TOKEN_INVALID, SESSION_REVOKED, WRONG_CALLER)",
  labelNames: ["reason"] as const,
  registers,
});

export const tokenIntrospections = new Counter({
  name: "portcullis_token_introspections_total",
  help: "Tokens introspected for services (IntrospectToken, POST /oauth2/introspect), by answer (active: true, false)",
  labelNames: ["active"] as const,
  registers,
});

// The revocation feed

export const revocationsPublished = new Counter({
  name: "portcullis_revocations_published_total",
  help: "Session changes published on the revocation feed, by kind (revoked: one per session, kyc_lowered and permissions_lowered: one per user)",
  labelNames: ["kind"] as const,
  registers,
});

export const revocationsApplied = new Counter({
  name: "portcullis_revocations_applied_total",
  help: "Session changes new to this instance's memory, by kind and by the source that brought them first (pubsub, catch_up, poll, local); one per session or user, however many sources repeat it",
  labelNames: ["kind", "source"] as const,
  registers,
});

export const feedConnected = new Gauge({
  name: "portcullis_revocation_feed_connected",
  help: "1 while the revocation feed is live (caught up and subscribed), 0 while user calls are refused for want of it",
  registers,
});

export const feedLag = new Histogram({
  name: "portcullis_revocation_feed_lag_seconds",
  help: "Time from a change's publication to its arrival over pub/sub on this instance (the publisher's own echo included), by the two instances' clocks",
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers,
});

// The key ring

/** What the key-ring gauges read at each scrape, so the age stays fresh between the ring's reloads. */
export interface KeyRingReading {
  /** Undefined while no key signs. */
  signingKeyAgeSeconds(): number | undefined;
  publishedKeys(): number;
}

let keyRing: KeyRingReading | undefined;

/**
 * Makes `reading` the ring the gauges report; the returned function stops it.
 * A process runs one ring; where tests start several, the last started is reported.
 */
export function reportKeyRing(reading: KeyRingReading): () => void {
  keyRing = reading;
  return () => {
    if (keyRing === reading) keyRing = undefined;
  };
}

export const signingKeyAge = new Gauge({
  name: "portcullis_signing_key_age_seconds",
  help: "How long the key that signs now has been signing",
  registers,
  collect() {
    const age = keyRing?.signingKeyAgeSeconds();
    if (age !== undefined) this.set(age);
  },
});

export const signingKeysPublished = new Gauge({
  name: "portcullis_signing_keys_published",
  help: "Keys in the JWKS (signing, about to sign, or verifying tokens not yet expired)",
  registers,
  collect() {
    if (keyRing) this.set(keyRing.publishedKeys());
  },
});

// The stores

export const dbStatementDuration = new Histogram({
  name: "portcullis_db_statement_duration_seconds",
  help: "Time of each SQL statement, a connection's wait included, by its first keyword (select, insert, update, delete, with, other)",
  labelNames: ["command"] as const,
  buckets: latencyBuckets,
  registers,
});

/** What a pg pool tells of its connections. */
export interface PoolReading {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
}

const pools = new Set<PoolReading>();

/** Adds `pool` to the pools the gauge sums (a process may open several); the returned function removes it. */
export function reportPool(pool: PoolReading): () => void {
  pools.add(pool);
  return () => pools.delete(pool);
}

export const dbPoolConnections = new Gauge({
  name: "portcullis_db_pool_connections",
  help: "Postgres pool connections by state (total, idle, waiting: callers waiting for one)",
  labelNames: ["state"] as const,
  registers,
  collect() {
    let total = 0;
    let idle = 0;
    let waiting = 0;
    for (const pool of pools) {
      total += pool.totalCount;
      idle += pool.idleCount;
      waiting += pool.waitingCount;
    }
    this.labels("total").set(total);
    this.labels("idle").set(idle);
    this.labels("waiting").set(waiting);
  },
});

export const redisCommandDuration = new Histogram({
  name: "portcullis_redis_command_duration_seconds",
  help: "Time of each Redis command, by command name",
  labelNames: ["command"] as const,
  buckets: latencyBuckets,
  registers,
});

export const redisErrors = new Counter({
  name: "portcullis_redis_errors_total",
  help: "Redis commands that failed (including timeouts), by command name",
  labelNames: ["command"] as const,
  registers,
});

export const batchSizes = new Histogram({
  name: "portcullis_batch_size",
  help: "Calls written together in one batched statement, by batch (refresh_rotation, otp_attempt, device_record)",
  labelNames: ["batch"] as const,
  buckets: [1, 2, 4, 8, 16, 32, 64],
  registers,
});
