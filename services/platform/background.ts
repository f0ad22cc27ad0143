import type { Logger } from "./logger.js";

/**
 * Work a call starts and does not wait for (mails sent after the answer);
 * a failure is logged, never thrown. Shutdown waits for it before the
 * database closes.
 */
export class Background {
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly logger: Logger) {}

  run(what: string, task: () => Promise<void>): void {
    const done: Promise<void> = task()
      .catch((error: unknown) => this.logger.error({ err: error }, `${what} failed`))
      .finally(() => this.running.delete(done));
    this.running.add(done);
  }

  /** Resolves once everything started so far has finished. */
  async settled(): Promise<void> {
    await Promise.all(this.running);
  }
}
