import type { Database } from "../platform/database.js";
import type { Logger } from "../platform/logger.js";

const pageSize = 1000;

export interface CleanupSettings {
  intervalSeconds: number;
  /** Revoked sessions are kept this long: new instances catch up on revocations from them. */
  revokedRetentionSeconds: number;
  otpFailureWindowSeconds: number;
}

/**
 * Deletes what can no longer be used: ended sessions (their refresh tokens go
 * with them), closed or expired OTP codes, failures outside the budget window.
 * In pages, with SKIP LOCKED, so several instances can run it at once without
 * waiting on each other or deleting twice.
 */
export class Cleanup {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly db: Database,
    private readonly settings: CleanupSettings,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.run().catch((error) => this.logger.error({ err: error }, "cleanup failed"));
    }, this.settings.intervalSeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async run(): Promise<Record<string, number>> {
    const removed = {
      sessions: await this.deleteInPages(
        "session",
        "id",
        "expire_time < now() or idle_expire_time < now() - make_interval(secs => $1) or revoke_time < now() - make_interval(secs => $1)",
        [this.settings.revokedRetentionSeconds],
      ),
      refreshTokens: await this.deleteInPages("refresh_token", "token_hash", "expire_time < now()", []),
      otpChallenges: await this.deleteInPages("otp_challenge", "id", "close_time is not null or expire_time < now()", []),
      otpFailures: await this.deleteInPages("otp_failure", "ctid", "fail_time < now() - make_interval(secs => $1)", [
        this.settings.otpFailureWindowSeconds,
      ]),
    };
    if (Object.values(removed).some((n) => n > 0)) this.logger.info({ removed }, "cleanup");
    return removed;
  }

  private async deleteInPages(table: string, key: string, condition: string, params: unknown[]): Promise<number> {
    let total = 0;
    for (;;) {
      const rows = await this.db.query(
        `delete from ${table} where ${key} in (
           select ${key} from ${table} where ${condition} limit ${pageSize} for update skip locked)
         returning 1`,
        params,
      );
      total += rows.length;
      if (rows.length < pageSize) return total;
    }
  }
}
