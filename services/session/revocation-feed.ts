import { unauthenticated, unavailable } from "../platform/errors.js";
import type { Logger } from "../platform/logger.js";
import { subscriberConnection, type RedisClient } from "../platform/redis.js";
import type { SessionGate } from "../policy/chain.js";
import type { Principal } from "../tokens/access-token.js";

/**
 * What the feed carries: sessions revoked, and users whose KYC level was
 * lowered (tokens issued before `sinceMs` must not count above `level`). Each
 * matters until `untilMs`, when every token it could concern has expired.
 */
export type FeedEvent =
  | { kind: "revoked"; sessionIds: string[]; untilMs: number }
  | { kind: "kyc_lowered"; userId: string; level: number; sinceMs: number; untilMs: number };

/** Events still in force, from the source of truth (Postgres) or the Redis backlog. */
export type RecentEvents = () => Promise<FeedEvent[]>;

export interface FeedChannel {
  client: RedisClient;
  /** Pub/sub channel, and the sorted set that keeps the backlog for catching up. */
  channel: string;
  backlog: string;
}

/**
 * Every instance holds the revocations and KYC downgrades whose tokens may
 * still be alive, so the chain checks them in memory on each call. Events
 * travel on Redis pub/sub and are kept in a Redis sorted set; an instance that
 * (re)subscribes first catches up. While the feed is down an instance cannot
 * know what changed, so it refuses user calls (fail closed) until it has.
 */
export class RevocationFeed implements SessionGate {
  private readonly revoked = new Map<string, number>();
  private readonly kycCaps = new Map<string, { level: number; sinceMs: number; untilMs: number }>();
  private live: boolean;
  private subscriber?: RedisClient;
  private pruneTimer?: NodeJS.Timeout;

  constructor(
    private readonly recent: RecentEvents,
    private readonly logger: Logger,
    private readonly redis?: FeedChannel,
    /** Whether this instance republishes what it caught up on into the backlog (Portcullis does; downstream guards only read). */
    private readonly restoresBacklog = false,
  ) {
    this.live = !redis;
  }

  async start(): Promise<void> {
    this.pruneTimer = setInterval(() => this.prune(Date.now()), 60_000);
    this.pruneTimer.unref();
    if (!this.redis) {
      await this.catchUp();
      return;
    }
    const subscriber = subscriberConnection(this.redis.client);
    this.subscriber = subscriber;
    subscriber.on("error", () => {});
    subscriber.on("close", () => {
      if (this.live && this.subscriber) this.logger.error("revocation feed lost: refusing user calls until it is back");
      this.live = false;
    });
    subscriber.on("message", (_channel: string, message: string) => this.receive(message));
    // After a reconnection: subscribe first, then catch up, so an event is
    // either in what we read or in what we receive.
    const channel = this.redis.channel;
    subscriber.on("ready", () => {
      if (this.live) return;
      subscriber
        .subscribe(channel)
        .then(() => this.catchUp())
        .catch((error: unknown) => this.logger.error({ err: error }, "revocation catch-up failed"));
    });
    await subscriber.connect();
    await subscriber.subscribe(channel);
    await this.catchUp();
  }

  async stop(): Promise<void> {
    clearInterval(this.pruneTimer);
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    subscriber?.disconnect();
  }

  /**
   * Tells every instance (this one at once). The change is already committed
   * in Postgres; if Redis cannot take it now, it is retried in the background
   * until it no longer matters (instances whose feed is down fail closed and
   * catch up when it is back).
   */
  async publish(event: FeedEvent): Promise<void> {
    if (event.kind === "revoked" && event.sessionIds.length === 0) return;
    this.apply(event);
    if (!this.redis) return;
    const { client, channel, backlog } = this.redis;
    const message = JSON.stringify(event);
    const attempt = (delayMs: number): Promise<void> =>
      Promise.all([client.zadd(backlog, event.untilMs, message), client.publish(channel, message)]).then(
        () => undefined,
        (error: unknown) => {
          if (Date.now() >= event.untilMs) return;
          this.logger.warn({ err: error, kind: event.kind }, "could not publish a session change; retrying");
          setTimeout(() => void attempt(Math.min(delayMs * 2, 5000)), delayMs).unref();
        },
      );
    await attempt(250);
  }

  /**
   * The principal as it stands now: refused if its session was revoked or has
   * reached its absolute expiry (a token claim), its KYC level capped if lowered
   * since the token was issued.
   */
  check(principal: Principal): Principal {
    if (!this.live) throw unavailable("session revocations cannot be confirmed right now; retry shortly");
    if (this.revoked.has(principal.sessionId)) {
      throw unauthenticated("SESSION_REVOKED", "this session has been signed out; sign in again");
    }
    if (principal.sessionExpiresAt && principal.sessionExpiresAt * 1000 <= Date.now()) {
      throw unauthenticated("SESSION_REVOKED", "this session has ended; sign in again");
    }
    const cap = this.kycCaps.get(principal.subject);
    if (cap && principal.issuedAt * 1000 <= cap.sinceMs && principal.kycLevel > cap.level) {
      return { ...principal, kycLevel: cap.level };
    }
    return principal;
  }

  private receive(message: string): void {
    try {
      this.apply(JSON.parse(message) as FeedEvent);
    } catch (error) {
      this.logger.error({ err: error }, "unreadable session-change message");
    }
  }

  private apply(event: FeedEvent): void {
    if (event.kind === "revoked") {
      for (const sessionId of event.sessionIds) this.revoked.set(sessionId, event.untilMs);
    } else {
      const known = this.kycCaps.get(event.userId);
      if (!known || known.sinceMs <= event.sinceMs) this.kycCaps.set(event.userId, event);
    }
  }

  private async catchUp(): Promise<void> {
    const subscribed = this.subscriber?.status;
    if (this.subscriber && subscribed !== "ready") return;
    const events = await this.recent();
    events.forEach((event) => this.apply(event));
    if (this.redis && this.restoresBacklog && events.length > 0) {
      // A restarted Redis lost the backlog: put back what Postgres knows, for guards that read only Redis.
      await this.redis.client.zadd(this.redis.backlog, ...events.flatMap((event) => [event.untilMs, JSON.stringify(event)]));
    }
    // Only a subscription that was up before the read and is still up leaves no gap.
    if (!this.redis || this.subscriber?.status === "ready") {
      if (!this.live && this.redis) this.logger.info("revocation feed live");
      this.live = true;
    }
  }

  private prune(nowMs: number): void {
    for (const [sessionId, until] of this.revoked) if (until <= nowMs) this.revoked.delete(sessionId);
    for (const [userId, cap] of this.kycCaps) if (cap.untilMs <= nowMs) this.kycCaps.delete(userId);
    if (this.redis && this.restoresBacklog) {
      this.redis.client.zremrangebyscore(this.redis.backlog, "-inf", nowMs).catch(() => {});
    }
  }
}

/** Catching up from the Redis backlog alone: for services that have no access to Postgres. */
export function backlogEvents(channel: FeedChannel): RecentEvents {
  return async () => {
    const messages = await channel.client.zrangebyscore(channel.backlog, Date.now(), "+inf");
    return messages.map((message) => JSON.parse(message) as FeedEvent);
  };
}
