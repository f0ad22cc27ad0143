import type { Principal } from "../kernel/call.js";
import type { Database } from "../platform/database.js";
import type { Logger } from "../platform/logger.js";
import type { RevocationFeed } from "./feed.js";
import { sessionStore } from "./store.js";

const flushIntervalMs = 30_000;

/**
 * What the chain asks of a user's session on every call, without a database
 * read (the feed), plus its activity, noted in memory and written in one
 * batch every 30 seconds.
 */
export class SessionGuard {
  private active = new Set<string>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly feed: RevocationFeed,
    private readonly db: Database,
    private readonly idleTimeoutSeconds: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush(), flushIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  check(principal: Principal): Principal {
    const current = this.feed.check(principal);
    this.active.add(principal.sessionId);
    return current;
  }

  /** Moves last activity (and so the idle expiry) forward for the sessions used since the last flush. */
  async flush(): Promise<void> {
    if (this.active.size === 0) return;
    const ids = [...this.active];
    this.active = new Set();
    try {
      await sessionStore.recordActivity(this.db, ids, this.idleTimeoutSeconds);
    } catch (error) {
      this.logger.warn({ err: error, sessions: ids.length }, "could not record session activity");
    }
  }
}
