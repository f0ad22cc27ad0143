import type { Logger } from "./logger.js";

/** One kind of row that can no longer be used, deleted by the store that owns it; answers how many went. */
export type Purge = () => Promise<number>;

/**
 * Every `intervalSeconds`, runs each store's purge of what can no longer be
 * used (ended sessions, closed codes, old failures). Purges delete in pages
 * with SKIP LOCKED, so every instance can run this at once.
 */
export class Cleanup {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly purges: Record<string, Purge>,
    private readonly intervalSeconds: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.run().catch((error) => this.logger.error({ err: error }, "cleanup failed"));
    }, this.intervalSeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async run(): Promise<Record<string, number>> {
    const removed: Record<string, number> = {};
    for (const [name, purge] of Object.entries(this.purges)) removed[name] = await purge();
    if (Object.values(removed).some((n) => n > 0)) this.logger.info({ removed }, "cleanup");
    return removed;
  }
}
