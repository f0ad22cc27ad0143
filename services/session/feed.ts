import { setTimeout as sleep } from "node:timers/promises";
import type { Principal } from "../kernel/call.js";
import { unavailable } from "../kernel/errors.js";
import { sharedDefaults } from "../platform/config.js";
import type { Sql } from "../platform/database.js";
import type { Logger } from "../platform/logger.js";
import { feedConnected, feedLag, revocationsApplied, revocationsPublished } from "../platform/metrics.js";
import { subscriberConnection, type RedisClient } from "../platform/redis.js";
import { inRootOrChildSpan, tracingOn } from "../platform/tracing.js";
import { userStore } from "../users/store.js";
import { Revocations, type FeedEvent } from "./revocations.js";
import { sessionStore } from "./store.js";

/** Events still in force, from the source of truth (Postgres) or the Redis backlog. */
export type RecentEvents = () => Promise<FeedEvent[]>;

export interface FeedChannel {
  client: RedisClient;
  /** Pub/sub channel, and the sorted set that keeps the backlog for catching up. */
  channel: string;
  backlog: string;
}

/** Changes made in the source of truth in the last `windowMs`, by its own clock. */
export type ChangesWithin = (windowMs: number) => Promise<FeedEvent[]>;

export interface FeedOptions {
  /** Whether this instance republishes what it caught up on into the backlog (Portcullis does; downstream guards only read). */
  restoresBacklog?: boolean;
  /**
   * Portcullis's backstop for a lost message: changes re-read from Postgres
   * every second. Downstream guards have no Postgres, so they go without it
   * and rely on pub/sub and the Redis backlog alone: a message that cannot
   * reach Redis reaches them only if its publisher's retries land.
   */
  poll?: ChangesWithin;
  /** How far the issuer's clock may be from Postgres's; widens which tokens a KYC downgrade caps. */
  clockToleranceSeconds?: number;
  /**
   * Portcullis says on the channel this often that it is there, so that a
   * guard can tell a quiet feed from one that no longer reaches it. Each beat
   * announces the interval, so guards time the feed by Portcullis's setting
   * rather than by one configured apart that could fall out of step with it.
   */
  heartbeatIntervalMs?: number;
  /**
   * For guards, which have no Postgres to fall back on: a feed that has heard
   * nothing (no change, no heartbeat) for three of the intervals its
   * heartbeats announce (the slowest, while they differ) cannot vouch that it
   * knows every revocation, so it refuses user calls until a message arrives
   * again and it has caught up.
   * Only once a first heartbeat is heard: a Portcullis older than heartbeats
   * never sends one, and guards are upgraded before Portcullis.
   */
  watchesSilence?: boolean;
  /** With `watchesSilence`: how long a silence to allow, in place of three announced intervals. */
  silenceTimeoutMs?: number;
}

const pollIntervalMs = 1000;
/**
 * A change is stamped with its transaction's start (`now()`) but becomes
 * visible only at commit, possibly after a later one: each poll re-reads this
 * far behind the previous one, and applying an event twice changes nothing.
 */
const pollOverlapMs = 10_000;
const catchUpRetryMs = { first: 250, max: 2000 };

/** Proof that the channel still reaches its subscribers; published only, never kept in the backlog. */
interface Heartbeat {
  kind: "heartbeat";
  /** How often its publisher beats. */
  intervalMs: number;
}

/** How many announced heartbeat intervals a guard lets pass in silence: one lost beat, or a slow one, is no outage. */
const beatsMissedBeforeSilent = 3;

/** What a message on the channel carries: an event or a heartbeat, stamped when published so receivers can time the feed (older publishers did not). */
type FeedMessage = (FeedEvent | Heartbeat) & { publishedAtMs?: number };

type AppliedFrom = "pubsub" | "catch_up" | "poll" | "local";

/**
 * Whether each feed started in this process and not stopped is live: the
 * connected gauge is 1 only while all are (a process runs one; tests, several).
 */
const feedsLive = new Map<RevocationFeed, boolean>();
const reportConnected = () => feedConnected.set(feedsLive.size > 0 && [...feedsLive.values()].every(Boolean) ? 1 : 0);

/**
 * Brings revocations, KYC downgrades and permissions taken away to every
 * instance's in-memory state (Revocations), which the chain checks on each
 * call. Events travel on Redis pub/sub and are kept in a Redis sorted set; an instance that
 * (re)subscribes first catches up. While the feed is down an instance cannot
 * know what changed, so it refuses user calls (fail closed) until it has;
 * guards that have heard Portcullis's heartbeat also count it down once it
 * has been silent for a few of them, as a subscription can stop delivering
 * unnoticed.
 * Portcullis instances also re-read recent changes from Postgres every
 * second, so a message pub/sub loses (its publisher could not reach Redis)
 * still arrives within about a second.
 */
export class RevocationFeed {
  private readonly state: Revocations;
  private live: boolean;
  private subscriber?: RedisClient;
  private pruneTimer?: NodeJS.Timeout;
  private heartbeatTimer?: NodeJS.Timeout;
  private silenceTimer?: NodeJS.Timeout;
  /** When the channel last brought anything (performance.now()). */
  private heardAtMs = 0;
  /** The slowest heartbeat interval announced lately, and when; undefined until one is heard, and silence cannot be told from quiet. */
  private slowestBeat?: { intervalMs: number; heardAtMs: number };
  /** Closed for silence rather than a lost subscription: only a message reopens it, not a reconnection. */
  private silent = false;
  /** Bumped whenever the subscription drops: a catch-up counts only if none dropped since it subscribed. */
  private round = 0;
  private resuming?: Promise<void>;
  private polling?: Promise<void>;
  /** Publishes still being retried, each settling true once it lands. */
  private readonly undelivered = new Set<Promise<boolean>>();
  private readonly stopping = new AbortController();

  constructor(
    private readonly recent: RecentEvents,
    private readonly logger: Logger,
    private readonly redis?: FeedChannel,
    private readonly options: FeedOptions = {},
  ) {
    this.live = !redis;
    this.state = new Revocations(options.clockToleranceSeconds ?? sharedDefaults.clockToleranceSeconds);
  }

  /**
   * Resolves once caught up (retrying as long as it takes), or once the
   * subscription drops first: the feed stays closed until it is back.
   */
  async start(): Promise<void> {
    this.pruneTimer = setInterval(() => this.prune(Date.now()), 60_000);
    this.pruneTimer.unref();
    feedsLive.set(this, this.live);
    reportConnected();
    const startedAt = performance.now();
    if (!this.redis) {
      await this.catchUp();
    } else {
      const subscriber = subscriberConnection(this.redis.client);
      this.subscriber = subscriber;
      subscriber.on("error", () => {});
      subscriber.on("close", () => {
        if (this.live && this.subscriber) this.logger.error("revocation feed lost: refusing user calls until it is back");
        this.setLive(false);
        this.round++;
      });
      subscriber.on("message", (_channel: string, message: string) => this.receive(message));
      subscriber.on("ready", () => {
        // A new subscription has a heartbeat timeout's grace to hear something; a feed already silent stays closed until it does.
        this.heardAtMs = performance.now();
        if (!this.live) this.resuming = this.resume(subscriber, ++this.round);
      });
      try {
        await subscriber.connect();
      } catch (error) {
        // Or it would keep reconnecting, and catch up into a database the failed start-up has closed.
        await this.stop();
        throw error;
      }
      if (this.options.heartbeatIntervalMs) this.beatEvery(this.options.heartbeatIntervalMs);
      await this.resuming;
      if (this.options.watchesSilence && !this.slowestBeat) {
        this.logger.warn("revocation feed has no heartbeat yet: until one arrives, a feed that stops reaching us cannot be told from a quiet one (a Portcullis older than heartbeats sends none)");
      }
    }
    if (this.options.poll) this.polling = this.poll(this.options.poll, startedAt);
  }

  async stop(): Promise<void> {
    clearInterval(this.pruneTimer);
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.silenceTimer);
    this.stopping.abort();
    this.round++;
    if (feedsLive.delete(this)) reportConnected();
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    subscriber?.disconnect();
    await this.polling;
  }

  /**
   * Tells every instance (this one at once). The change is already committed
   * in Postgres; if Redis cannot take it now, it is retried in the background
   * until it no longer matters or the feed stops (instances whose feed is down
   * fail closed and catch up when it is back; Portcullis instances also read
   * it from Postgres within about a second).
   */
  async publish(event: FeedEvent): Promise<void> {
    if (event.kind === "revoked" && event.sessionIds.length === 0) return;
    revocationsPublished.labels(event.kind).inc(event.kind === "revoked" ? event.sessionIds.length : 1);
    this.apply(event, "local");
    if (!this.redis) return;
    const { client, channel, backlog } = this.redis;
    const message = JSON.stringify({ ...event, publishedAtMs: Date.now() } satisfies FeedMessage);
    const send = () => Promise.all([client.zadd(backlog, event.untilMs, message), client.publish(channel, message)]);
    try {
      await send();
    } catch (error) {
      this.logger.warn({ err: error, kind: event.kind }, "could not publish a session change; retrying");
      const delivery = this.redeliver(send, event);
      this.undelivered.add(delivery);
      void delivery.then(() => this.undelivered.delete(delivery));
    }
  }

  /** Waits up to `timeoutMs` for the publishes still being retried; false if any has not landed. */
  async delivered(timeoutMs: number): Promise<boolean> {
    if (this.undelivered.size === 0) return true;
    const timeout = new AbortController();
    const landed = Promise.all(this.undelivered).then((results) => results.every(Boolean));
    const expired = sleep(timeoutMs, false, { signal: timeout.signal, ref: false }).catch(() => false);
    try {
      return await Promise.race([landed, expired]);
    } finally {
      timeout.abort();
    }
  }

  /** The principal as it stands now (see Revocations.check); refused while the feed cannot be confirmed. */
  check(principal: Principal): Principal {
    if (!this.live) throw unavailable("session revocations cannot be confirmed right now; retry shortly");
    return this.state.check(principal);
  }

  private receive(message: string): void {
    this.heardAtMs = performance.now();
    if (this.silent && this.subscriber) {
      // Whatever the channel carried while it did not reach us is in the backlog.
      this.silent = false;
      this.logger.info("revocation feed heard again; catching up");
      this.resuming = this.resume(this.subscriber, ++this.round);
    }
    try {
      const event = JSON.parse(message) as FeedMessage;
      if (event.kind === "heartbeat") return this.heardBeat(event.intervalMs);
      this.apply(event, "pubsub");
      if (typeof event.publishedAtMs === "number") feedLag.observe(Math.max(0, Date.now() - event.publishedAtMs) / 1000);
    } catch (error) {
      this.logger.error({ err: error }, "unreadable session-change message");
    }
  }

  private apply(event: FeedEvent, from: AppliedFrom): void {
    const news = this.state.apply(event);
    if (news > 0) revocationsApplied.labels(event.kind, from).inc(news);
  }

  private setLive(live: boolean): void {
    this.live = live;
    if (feedsLive.has(this)) {
      feedsLive.set(this, live);
      reportConnected();
    }
  }

  /**
   * After a (re)connection: subscribe first, then catch up, so an event is
   * either in what we read or in what we receive. Until that succeeds every
   * user call is refused, so a failure (a Postgres blip) is retried with
   * backoff for as long as this subscription stays up, not left until the
   * next reconnection.
   */
  private async resume(subscriber: RedisClient, round: number): Promise<void> {
    for (let delayMs = catchUpRetryMs.first; ; delayMs = Math.min(delayMs * 2, catchUpRetryMs.max)) {
      try {
        await subscriber.subscribe(this.redis!.channel);
        if (round !== this.round) return;
        await this.catchUp();
        // Only a subscription that was up before the read and is still up leaves no gap; a silent feed opens only on a message.
        if (round !== this.round || this.silent) return;
        this.logger.info("revocation feed live");
        this.setLive(true);
        return;
      } catch (error) {
        if (round !== this.round) return;
        this.logger.error({ err: error, retryInMs: delayMs }, "revocation catch-up failed; retrying");
      }
      if (!(await this.pause(delayMs)) || round !== this.round) return;
    }
  }

  private async catchUp(): Promise<void> {
    // A trace of its own (user calls are refused until it succeeds); the every-second polls get none: one trace a second per instance is noise.
    const events = await (tracingOn ? inRootOrChildSpan("session_feed.catch_up", {}, () => this.recent()) : this.recent());
    events.forEach((event) => this.apply(event, "catch_up"));
    if (this.redis && this.options.restoresBacklog && events.length > 0) {
      // A restarted Redis lost the backlog: put back what Postgres knows, for guards that read only Redis.
      await this.redis.client.zadd(this.redis.backlog, ...events.flatMap((event) => [event.untilMs, JSON.stringify(event)]));
    }
  }

  /**
   * Re-reads what changed since the last good read (less the overlap), every
   * second until the feed stops. A failed read neither closes the feed (pub/sub
   * may be fine) nor loses ground: the next one reaches back to the last good one.
   */
  private async poll(changesWithin: ChangesWithin, readAt: number): Promise<void> {
    let failing = false;
    while (await this.pause(pollIntervalMs)) {
      const startedAt = performance.now();
      try {
        for (const event of await changesWithin(startedAt - readAt + pollOverlapMs)) this.apply(event, "poll");
        readAt = startedAt;
        if (failing) this.logger.info("reading session changes from Postgres again");
        failing = false;
      } catch (error) {
        if (!failing) this.logger.warn({ err: error }, "could not read recent session changes from Postgres; retrying every second");
        failing = true;
      }
    }
  }

  /** Beats at once, so guards that went silent while no Portcullis was up hear one as it starts. */
  private beatEvery(intervalMs: number): void {
    const { client, channel } = this.redis!;
    const beat = () =>
      void client.publish(channel, JSON.stringify({ kind: "heartbeat", intervalMs, publishedAtMs: Date.now() } satisfies FeedMessage)).catch(() => {
        // Redis out of reach is reported by the subscription and by the publishes that matter; guards notice the missed beats.
      });
    beat();
    this.heartbeatTimer = setInterval(beat, intervalMs);
    this.heartbeatTimer.unref();
  }

  /** From the first beat on, silence means the feed no longer reaches us: the watch starts then, timed by the intervals announced. */
  private heardBeat(intervalMs: unknown): void {
    // A beat that does not say how often it comes (the first build with heartbeats did not) cannot time a silence.
    if (typeof intervalMs !== "number" || !(intervalMs > 0)) return;
    const slowest = this.slowestBeat;
    const nowMs = performance.now();
    // While instances beat at different intervals (a rolling change of FEED_HEARTBEAT_SECONDS), the slowest times the
    // silence: a faster one takes over only once the slowest has missed its beats, or the guard would flap between them.
    if (!slowest || intervalMs >= slowest.intervalMs || nowMs - slowest.heardAtMs > beatsMissedBeforeSilent * slowest.intervalMs) {
      this.slowestBeat = { intervalMs, heardAtMs: nowMs };
    }
    if (slowest || !this.options.watchesSilence || this.stopping.signal.aborted) return;
    this.logger.info({ silenceTimeoutMs: this.silenceTimeoutMs() }, "revocation feed heartbeat heard: a silent feed now refuses user calls");
    this.watchSilence();
  }

  private silenceTimeoutMs(): number {
    return this.options.silenceTimeoutMs ?? beatsMissedBeforeSilent * this.slowestBeat!.intervalMs;
  }

  /** Checks a few times per timeout, which follows the intervals announced, so each check schedules the next. */
  private watchSilence(): void {
    const timeoutMs = this.silenceTimeoutMs();
    const silentForMs = Math.round(performance.now() - this.heardAtMs);
    if (this.live && silentForMs > timeoutMs) {
      this.logger.error({ silentForMs }, "revocation feed silent: refusing user calls until it is heard again");
      this.silent = true;
      this.setLive(false);
    }
    this.silenceTimer = setTimeout(() => this.watchSilence(), Math.min(timeoutMs / 5, 1000));
    this.silenceTimer.unref();
  }

  /** Retries a publish until it lands (true), stops mattering or the feed stops (false). */
  private async redeliver(send: () => Promise<unknown>, event: FeedEvent): Promise<boolean> {
    for (let delayMs = 250; (await this.pause(delayMs)) && Date.now() < event.untilMs; delayMs = Math.min(delayMs * 2, 5000)) {
      try {
        await send();
        return true;
      } catch (error) {
        this.logger.warn({ err: error, kind: event.kind }, "could not publish a session change; retrying");
      }
    }
    return false;
  }

  /** Waits `ms`; false, at once, if the feed stops meanwhile. */
  private pause(ms: number): Promise<boolean> {
    return sleep(ms, true, { signal: this.stopping.signal, ref: false }).catch(() => false);
  }

  private prune(nowMs: number): void {
    this.state.prune(nowMs);
    if (this.redis && this.options.restoresBacklog) {
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

/**
 * Session changes recent enough that tokens issued before them may still be
 * alive: revocations, KYC levels and permissions lowered; only those of the last
 * `windowMs` when given. Postgres is the truth the feed catches up from and
 * re-reads every second; both ask Postgres's clock, never this process's.
 */
export async function recentChanges(sql: Sql, accessTokenLifetimeMs: number, windowMs = accessTokenLifetimeMs): Promise<FeedEvent[]> {
  const windowSeconds = Math.min(windowMs, accessTokenLifetimeMs) / 1000;
  const [revoked, lowered] = await Promise.all([sessionStore.recentRevocations(sql, windowSeconds), userStore.recentLowerings(sql, windowSeconds)]);
  return [
    ...revoked.map((row): FeedEvent => ({ kind: "revoked", sessionIds: [row.id], untilMs: row.revoke_time.getTime() + accessTokenLifetimeMs })),
    ...lowered.flatMap((row): FeedEvent[] => {
      if (!row.kyc_lower_time) return [];
      const sinceMs = row.kyc_lower_time.getTime();
      return [{ kind: "kyc_lowered", userId: row.id, level: row.kyc_level, sinceMs, untilMs: sinceMs + accessTokenLifetimeMs }];
    }),
    ...lowered.flatMap((row): FeedEvent[] => {
      if (!row.permissions_lower_time) return [];
      const sinceMs = row.permissions_lower_time.getTime();
      return [{ kind: "permissions_lowered", userId: row.id, permissions: row.permissions, sinceMs, untilMs: sinceMs + accessTokenLifetimeMs }];
    }),
  ];
}
