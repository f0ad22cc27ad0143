import { unauthenticated, unavailable } from "../platform/errors.js";
import type { Logger } from "../platform/logger.js";
import { subscriberConnection, type RedisClient } from "../platform/redis.js";
import type { SessionGate } from "../policy/chain.js";
import type { Principal } from "../tokens/access-token.js";

/** Revoked sessions that still have live access tokens: from Postgres, the truth. */
export type RecentRevocations = () => Promise<{ sessionId: string; untilMs: number }[]>;

/**
 * Every instance holds the sessions revoked while their access tokens can
 * still be alive, so the chain checks revocation in memory. Revocations travel
 * on Redis pub/sub; an instance that (re)subscribes first catches up from
 * Postgres. While the feed is down the instance cannot know what was revoked,
 * so it refuses every user call (fail closed) until it has caught up again.
 */
export class RevocationFeed implements SessionGate {
  private readonly revoked = new Map<string, number>();
  private live: boolean;
  private subscriber?: RedisClient;
  private pruneTimer?: NodeJS.Timeout;

  constructor(
    private readonly recent: RecentRevocations,
    private readonly logger: Logger,
    private readonly redis?: { client: RedisClient; channel: string },
  ) {
    this.live = !redis;
  }

  async start(): Promise<void> {
    await this.catchUp();
    this.pruneTimer = setInterval(() => this.prune(Date.now()), 60_000);
    this.pruneTimer.unref();
    if (!this.redis) return;
    const subscriber = subscriberConnection(this.redis.client);
    this.subscriber = subscriber;
    subscriber.on("error", () => {});
    subscriber.on("close", () => {
      if (this.live) this.logger.error("revocation feed lost: refusing user calls until it is back");
      this.live = false;
    });
    subscriber.on("message", (_channel: string, message: string) => this.receive(message));
    // After a reconnection: subscribe first, then catch up from Postgres, so a
    // revocation is either in what we read or in what we receive.
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
    this.subscriber?.disconnect();
  }

  /**
   * Tells every instance (this one at once) that these sessions are revoked.
   * The revocation is already committed in Postgres; if Redis cannot take the
   * message now, it is retried in the background until the tokens have expired
   * (instances whose feed is down fail closed and catch up from Postgres).
   */
  async publish(sessionIds: readonly string[], untilMs: number): Promise<void> {
    if (sessionIds.length === 0) return;
    for (const sessionId of sessionIds) this.revoked.set(sessionId, untilMs);
    if (!this.redis) return;
    const { client, channel } = this.redis;
    const message = JSON.stringify({ revoked: sessionIds, until: untilMs });
    const attempt = (delayMs: number): Promise<void> =>
      client.publish(channel, message).then(
        () => undefined,
        (error: unknown) => {
          if (Date.now() >= untilMs) return;
          this.logger.warn({ err: error, sessions: sessionIds.length }, "could not publish revocations; retrying");
          setTimeout(() => void attempt(Math.min(delayMs * 2, 5000)), delayMs).unref();
        },
      );
    await attempt(250);
  }

  check(principal: Principal): void {
    if (!this.live) throw unavailable("session revocations cannot be confirmed right now; retry shortly");
    if (this.revoked.has(principal.sessionId)) {
      throw unauthenticated("SESSION_REVOKED", "this session has been signed out; sign in again");
    }
  }

  private receive(message: string): void {
    try {
      const { revoked, until } = JSON.parse(message) as { revoked: string[]; until: number };
      for (const sessionId of revoked) this.revoked.set(sessionId, until);
    } catch (error) {
      this.logger.error({ err: error }, "unreadable revocation message");
    }
  }

  private async catchUp(): Promise<void> {
    const started = this.subscriber?.status;
    if (this.subscriber && started !== "ready") return;
    for (const { sessionId, untilMs } of await this.recent()) this.revoked.set(sessionId, untilMs);
    // Only a subscription that was up before the read and is still up leaves no gap.
    if (!this.redis || (started === "ready" && this.subscriber?.status === "ready")) {
      if (!this.live && this.redis) this.logger.info("revocation feed live");
      this.live = true;
    }
  }

  private prune(nowMs: number): void {
    for (const [sessionId, until] of this.revoked) if (until <= nowMs) this.revoked.delete(sessionId);
  }
}
