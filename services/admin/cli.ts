import { randomUUID } from "node:crypto";
import { userInfo } from "node:os";
import { normalizeEmail } from "../auth/email.js";
import { checkPhoneNumber } from "../auth/phone.js";
import { ClientSecrets } from "../clients/client-secrets.js";
import { ServiceAccounts } from "../clients/service-accounts.js";
import type { CallOrigin } from "../kernel/call.js";
import { migrations } from "../migrations/index.js";
import { accessTokenLifetimeMs, ConfigError, loadConfig, sessionFeedKeys, type Config } from "../platform/config.js";
import { Database } from "../platform/database.js";
import { embeddedKeyEncryptionKey, startEmbeddedPostgres } from "../platform/embedded.js";
import { deriveKey } from "../platform/envelope.js";
import { createLogger, type Logger } from "../platform/logger.js";
import { connectRedis } from "../platform/redis.js";
import { RevocationFeed } from "../session/feed.js";
import { Sessions } from "../session/sessions.js";
import { RefreshTokens } from "../tokens/refresh-token.js";
import { userStore } from "../users/store.js";
import { Accounts } from "./accounts.js";
import { knownPermissions } from "./permissions.js";
import { readServiceCommand, runServiceCommand, serviceUsage, UsageError } from "./service-commands.js";

const usage = `usage: npm run admin -- <command> <phone-or-email> [permission]
       npm run admin -- service <command> [<name>] …

  grant   <user> <permission>   give a permission (${knownPermissions.join(", ")})
  revoke  <user> <permission>   take a permission away
  list    <user>                show the user's permissions and KYC level
  disable <user> [reason]       disable the account and sign out all its sessions
  enable  <user>                enable a disabled account
  unlock  <user>                clear the account's password lockouts, for every source

<user> is a phone number in international form (+447400123456) or an email.
A permission granted reaches the user's access token at its next refresh (at most ACCESS_TOKEN_TTL_SECONDS);
one taken away stops working at the user's next call, on every instance.
Each change is audited with your operating-system user name as the actor.
Runs against the configured database (DATABASE_URL), or the embedded one in DATA_DIR when npm start is not running;
needs no SMS or email settings. Once an operator holds user.admin, AdminService does all this and more.

${serviceUsage}`;

const commands = ["grant", "revoke", "list", "disable", "enable", "unlock"];

/** Changes that must reach running instances at once: told through Redis as well as Postgres. */
const published = ["disable", "revoke"];

/** How long `disable` and `revoke` wait for running instances to be told before they exit. */
const publishWaitMs = 5000;

async function main(args: string[]): Promise<string> {
  if (args[0] === "service") {
    const command = await readServiceCommand(args.slice(1));
    return withDatabase(async (db, config, logger) => {
      const keyEncryptionKey = config.keyEncryptionKey ?? embeddedKeyEncryptionKey(config.dataDir, logger);
      const accounts = new ServiceAccounts(db, new ClientSecrets(deriveKey(keyEncryptionKey, "client-secrets")), [config.jwt.issuer, config.jwt.audience]);
      return runServiceCommand(command, accounts, cliActor(), cliOrigin());
    });
  }
  const [command, who, permission, ...rest] = args;
  if (!command || !who || !commands.includes(command)) throw new UsageError(usage);
  if ((command === "grant" || command === "revoke") && !knownPermissions.includes(permission ?? "")) {
    throw new UsageError(`unknown permission "${permission ?? ""}"; known: ${knownPermissions.join(", ")}`);
  }
  return withDatabase(async (db, config, logger) => {
    const user = await userStore.findByPhoneOrEmail(db, userKey(who));
    if (!user) throw new UsageError(`no account with ${who}`);
    if (command === "list") {
      return `${who}: user ${user.id}, KYC level ${user.kyc_level}, ${user.disable_time ? "DISABLED, " : ""}permissions: ${user.permissions.join(", ") || "(none)"}`;
    }
    const origin = cliOrigin();
    return await change(db, config, logger, published.includes(command), async (accounts) => {
      const actor = cliActor();
      switch (command) {
        case "grant": {
          const permissions = await accounts.grant(actor, user.id, permission!, origin);
          return `granted ${permission} to ${who}; effective at the user's next token refresh. Permissions now: ${permissions.join(", ")}`;
        }
        case "revoke": {
          const permissions = await accounts.revoke(actor, user.id, permission!, origin);
          return `revoked ${permission} from ${who}; effective at the user's next call. Permissions now: ${permissions.join(", ") || "(none)"}`;
        }
        case "disable":
          return `disabled; ${await accounts.disable(actor, user.id, [permission, ...rest].join(" ").trim() || "not given", origin)} session(s) signed out`;
        case "enable":
          await accounts.enable(actor, user.id, origin);
          return "enabled";
        default:
          return (await accounts.unlock(actor, user.id, origin)) ? `unlocked ${who}` : `${who} was not locked out; wrong-password counts cleared`;
      }
    });
  });
}

/** Runs `run` on the configured database, or the embedded one in DATA_DIR, and closes it after. */
async function withDatabase(run: (db: Database, config: Config, logger: Logger) => Promise<string>): Promise<string> {
  const config = loadConfig(process.env, { sendsCodes: false });
  const logger = createLogger("warn");
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir);
  const db = await Database.open(embedded?.url ?? config.databaseUrl!, logger, embedded?.options ?? { poolSize: 1, prepare: false }, migrations);
  try {
    return await run(db, config, logger);
  } finally {
    await db.close();
    await embedded?.stop();
  }
}

/** Where the tool's changes come from, as the audit log names it. */
function cliOrigin(): CallOrigin {
  return { clientIp: "admin-cli", userAgent: "portcullis-admin", requestId: randomUUID() };
}

/**
 * Runs a change through the same domain logic as AdminService. One that must
 * reach running instances at once (`publishes`) is told them through Redis,
 * best effort: Postgres is the truth, so a Redis that cannot be reached only
 * delays the news and never stops the change.
 */
async function change(db: Database, config: Config, logger: Logger, publishes: boolean, run: (accounts: Accounts) => Promise<string>): Promise<string> {
  const keyEncryptionKey = config.keyEncryptionKey ?? embeddedKeyEncryptionKey(config.dataDir, logger);
  const refreshTokens = new RefreshTokens(deriveKey(keyEncryptionKey, "refresh-tokens"));
  const unheard =
    "Portcullis instances pick the change up from Postgres within about a second anyway; services using the Portcullis guard " +
    `hear of it only through Redis and may go on accepting access tokens issued before it for up to ${Math.ceil(config.jwt.accessTokenTtlSeconds / 60)} minutes.`;
  const redis =
    publishes && config.redisUrl
      ? await connectRedis(config.redisUrl, config.redisCluster, config.redisCommandTimeoutMs).catch((error: Error) => {
          console.error(`warning: could not reach Redis (${error.message}); changing Postgres only. ${unheard}`);
          return undefined;
        })
      : undefined;
  const feed = new RevocationFeed(async () => [], logger, redis && { client: redis, ...sessionFeedKeys(config.redisKeyPrefix) });
  try {
    const tokenLifetimeMs = accessTokenLifetimeMs(config.jwt);
    const sessions = new Sessions(db, config.session, feed, tokenLifetimeMs, refreshTokens);
    const message = await run(new Accounts(db, sessions, feed, tokenLifetimeMs));
    if (!(await feed.delivered(publishWaitMs))) {
      console.error(`warning: could not tell running instances through Redis within ${publishWaitMs / 1000} s. ${unheard}`);
    }
    return message;
  } finally {
    // Ends the publishes still being retried, and the connection.
    await feed.stop();
    redis?.disconnect();
  }
}

/** Who ran the tool, as the audit log names them (os:<name>); userInfo() fails for a user id with no passwd entry (some containers). */
function cliActor(): string {
  try {
    return `os:${userInfo().username}`;
  } catch {
    return `os:${process.env.USER || "unknown"}`;
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
