import { randomUUID } from "node:crypto";
import { feedChannel } from "../app.js";
import { checkPhoneNumber } from "../auth/phone.js";
import { normalizeEmail } from "../auth/email.js";
import { audit, type AuditOrigin } from "../platform/audit.js";
import { ConfigError, loadConfig, type Config } from "../platform/config.js";
import { Database } from "../platform/database.js";
import { embeddedKeyEncryptionKey, startEmbeddedPostgres } from "../platform/embedded.js";
import { deriveKey } from "../platform/envelope.js";
import { createLogger, type Logger } from "../platform/logger.js";
import { connectRedis } from "../platform/redis.js";
import { sessionAdminPermission } from "../session/handlers.js";
import { RevocationFeed, type FeedChannel } from "../session/revocation-feed.js";
import { Sessions } from "../session/sessions.js";
import { RefreshTokens } from "../tokens/refresh-token.js";

/** Permissions that mean something to Portcullis; anything else is a typo. */
const knownPermissions = ["kyc.review", sessionAdminPermission];

const usage = `usage: npm run admin -- <command> <phone-or-email> [permission]

  grant   <user> <permission>   give a permission (${knownPermissions.join(", ")})
  revoke  <user> <permission>   take a permission away
  list    <user>                show the user's permissions and KYC level
  disable <user>                disable the account and sign out all its sessions
  enable  <user>                enable a disabled account

<user> is a phone number in international form (+447400123456) or an email.
Permission changes reach the user's access token at its next refresh (at most ACCESS_TOKEN_TTL_SECONDS).
Runs against the configured database (DATABASE_URL), or the embedded one in DATA_DIR when npm start is not running.`;

/** How long `disable` waits for running instances to be told before it exits. */
const publishWaitMs = 5000;

class UsageError extends Error {}

async function main(args: string[]): Promise<string> {
  const [command, who, permission] = args;
  if (!command || !who || !["grant", "revoke", "list", "disable", "enable"].includes(command)) throw new UsageError(usage);
  if ((command === "grant" || command === "revoke") && !knownPermissions.includes(permission ?? "")) {
    throw new UsageError(`unknown permission "${permission ?? ""}"; known: ${knownPermissions.join(", ")}`);
  }
  const config = loadConfig();
  const logger = createLogger("warn");
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir);
  const redis = config.redisUrl ? await connectRedis(config.redisUrl, config.redisCluster) : undefined;
  const db = await Database.open(embedded?.url ?? config.databaseUrl!, logger, embedded?.options ?? { poolSize: 1, prepare: false });
  try {
    const [user] = await db.query<{ id: string; permissions: string[]; kyc_level: number; disable_time: Date | null }>(
      "select id, permissions, kyc_level, disable_time from app_user where phone_number = $1 or email = $1",
      [userKey(who)],
    );
    if (!user) throw new UsageError(`no account with ${who}`);
    const origin: AuditOrigin = { clientIp: "admin-cli", userAgent: "portcullis-admin", requestId: randomUUID() };
    switch (command) {
      case "list":
        return `${who}: user ${user.id}, KYC level ${user.kyc_level}, ${user.disable_time ? "DISABLED, " : ""}permissions: ${user.permissions.join(", ") || "(none)"}`;
      case "grant":
      case "revoke": {
        await db.transaction(async (tx) => {
          if (command === "grant") {
            await tx.query("update app_user set permissions = array_append(array_remove(permissions, $1), $1), update_time = now() where id = $2", [
              permission, user.id,
            ]);
          } else {
            await tx.query("update app_user set permissions = array_remove(permissions, $1), update_time = now() where id = $2", [permission, user.id]);
          }
          await audit(tx, origin, { event: `permission.${command}`, outcome: "success", userId: user.id, detail: { permission: permission! } });
        });
        return `${command === "grant" ? "granted" : "revoked"} ${permission} ${command === "grant" ? "to" : "from"} ${who}; effective at the next token refresh`;
      }
      default:
        return await setDisabled(db, user.id, command === "disable", origin, config, redis && feedChannel(redis, config.redisKeyPrefix), logger);
    }
  } finally {
    await db.close();
    redis?.disconnect();
    await embedded?.stop();
  }
}

async function setDisabled(
  db: Database,
  userId: string,
  disable: boolean,
  origin: AuditOrigin,
  config: Config,
  channel: FeedChannel | undefined,
  logger: Logger,
): Promise<string> {
  const lifetimeMs = (config.jwt.accessTokenTtlSeconds + config.jwt.clockToleranceSeconds) * 1000;
  const keyEncryptionKey = config.keyEncryptionKey ?? embeddedKeyEncryptionKey(config.dataDir, logger);
  const refreshTokens = new RefreshTokens(deriveKey(keyEncryptionKey, "refresh-tokens"));
  const feed = new RevocationFeed(async () => [], logger, channel);
  const sessions = new Sessions(config.session, feed, lifetimeMs, refreshTokens);
  const revoked = await db.transaction(async (tx) => {
    await tx.query("update app_user set disable_time = case when $1 then now() end, update_time = now() where id = $2", [disable, userId]);
    const ids = disable ? await sessions.revoke(tx, { userId }, "account_disabled") : [];
    await audit(tx, origin, { event: disable ? "account.disable" : "account.enable", outcome: "success", userId, detail: { revoked_sessions: ids.length } });
    return ids;
  });
  await sessions.published(revoked);
  // The feed retries in the background, which ends when this process does.
  if (!(await feed.delivered(publishWaitMs))) {
    console.error(
      `warning: could not tell running instances through Redis within ${publishWaitMs / 1000} s. ` +
        "Portcullis instances pick the change up from Postgres within about a second anyway; services using the Portcullis guard " +
        `hear of it only through Redis and may accept the signed-out sessions' access tokens for up to ${Math.ceil(config.jwt.accessTokenTtlSeconds / 60)} minutes.`,
    );
  }
  return disable ? `disabled; ${revoked.length} session(s) signed out` : "enabled";
}

function userKey(who: string): string {
  if (who.includes("@")) return normalizeEmail(who);
  const phone = checkPhoneNumber(who, []);
  return phone.ok ? phone.e164 : who;
}

main(process.argv.slice(2)).then(
  (message) => {
    console.log(message);
    process.exit(0);
  },
  (error: unknown) => {
    if (error instanceof UsageError || error instanceof ConfigError) console.error(error.message);
    else console.error(`admin: failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
