import { randomUUID } from "node:crypto";
import { audit } from "../audit/store.js";
import { normalizeEmail } from "../auth/email.js";
import { checkPhoneNumber } from "../auth/phone.js";
import type { CallOrigin } from "../kernel/call.js";
import { migrations } from "../migrations/index.js";
import { accessTokenLifetimeMs, ConfigError, loadConfig, sessionFeedKeys, type Config } from "../platform/config.js";
import { Database } from "../platform/database.js";
import { embeddedKeyEncryptionKey, startEmbeddedPostgres } from "../platform/embedded.js";
import { deriveKey } from "../platform/envelope.js";
import { createLogger, type Logger } from "../platform/logger.js";
import { connectRedis } from "../platform/redis.js";
import { RevocationFeed } from "../session/feed.js";
import { sessionAdminPermission, Sessions } from "../session/sessions.js";
import { RefreshTokens } from "../tokens/refresh-token.js";
import { userStore } from "../users/store.js";

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
  const config = loadConfig(process.env, { sendsCodes: false });
  const logger = createLogger("warn");
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir);
  const db = await Database.open(embedded?.url ?? config.databaseUrl!, logger, embedded?.options ?? { poolSize: 1, prepare: false }, migrations);
  try {
    const user = await userStore.findByPhoneOrEmail(db, userKey(who));
    if (!user) throw new UsageError(`no account with ${who}`);
    const origin: CallOrigin = { clientIp: "admin-cli", userAgent: "portcullis-admin", requestId: randomUUID() };
    switch (command) {
      case "list":
        return `${who}: user ${user.id}, KYC level ${user.kyc_level}, ${user.disable_time ? "DISABLED, " : ""}permissions: ${user.permissions.join(", ") || "(none)"}`;
      case "grant":
      case "revoke": {
        await db.transaction(async (tx) => {
          await userStore.setPermission(tx, user.id, permission!, command === "grant");
          await audit(tx, origin, { event: `permission.${command}`, outcome: "success", userId: user.id, detail: { permission: permission! } });
        });
        return `${command === "grant" ? "granted" : "revoked"} ${permission} ${command === "grant" ? "to" : "from"} ${who}; effective at the next token refresh`;
      }
      default:
        return await setDisabled(db, user.id, command === "disable", origin, config, logger);
    }
  } finally {
    await db.close();
    await embedded?.stop();
  }
}

async function setDisabled(
  db: Database,
  userId: string,
  disable: boolean,
  origin: CallOrigin,
  config: Config,
  logger: Logger,
): Promise<string> {
  if (!disable) {
    await db.transaction(async (tx) => {
      await userStore.setDisabled(tx, userId, false);
      await audit(tx, origin, { event: "account.enable", outcome: "success", userId });
    });
    return "enabled";
  }
  const keyEncryptionKey = config.keyEncryptionKey ?? embeddedKeyEncryptionKey(config.dataDir, logger);
  const refreshTokens = new RefreshTokens(deriveKey(keyEncryptionKey, "refresh-tokens"));
  const unheard =
    "Portcullis instances pick the change up from Postgres within about a second anyway; services using the Portcullis guard " +
    `hear of it only through Redis and may accept the signed-out sessions' access tokens for up to ${Math.ceil(config.jwt.accessTokenTtlSeconds / 60)} minutes.`;
  // Postgres is the truth: a Redis that cannot be reached only delays the news, so it never stops the change.
  const redis = config.redisUrl
    ? await connectRedis(config.redisUrl, config.redisCluster, config.redisCommandTimeoutMs).catch((error: Error) => {
        console.error(`warning: could not reach Redis (${error.message}); disabling in Postgres only. ${unheard}`);
        return undefined;
      })
    : undefined;
  const feed = new RevocationFeed(async () => [], logger, redis && { client: redis, ...sessionFeedKeys(config.redisKeyPrefix) });
  try {
    const sessions = new Sessions(db, config.session, feed, accessTokenLifetimeMs(config.jwt), refreshTokens);
    const revoked = await sessions.end({
      which: { userId },
      reason: "account_disabled",
      origin,
      cause: (tx) => userStore.setDisabled(tx, userId, true),
      audit: (ids) => [{ event: "account.disable", outcome: "success", userId, detail: { revoked_sessions: ids.length } }],
    });
    if (!(await feed.delivered(publishWaitMs))) {
      console.error(`warning: could not tell running instances through Redis within ${publishWaitMs / 1000} s. ${unheard}`);
    }
    return `disabled; ${revoked.length} session(s) signed out`;
  } finally {
    // Ends the publishes still being retried, and the connection.
    await feed.stop();
    redis?.disconnect();
  }
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
