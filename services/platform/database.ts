import { MikroORM, type EntitySchema } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import type { Logger } from "./logger.js";
import { migrations } from "./migrations/index.js";

export type { MikroORM };

/** Several instances may start at once: one migrates while the others wait for it. */
const migrationLockId = 0x6d696772; // "migr"

/**
 * Opens MikroORM on Postgres and applies the committed migrations. `shared`
 * says whether other instances may start against the same database; the
 * embedded PGlite serves one transaction at a time across connections, where
 * the lock's transaction would wait on the migrator's own connection.
 */
export async function openDatabase(
  url: string,
  entities: EntitySchema<any, any>[],
  logger: Logger,
  poolSize = 10,
  shared = true,
): Promise<MikroORM> {
  const orm = await MikroORM.init({
    clientUrl: url,
    entities,
    extensions: [Migrator],
    pool: { min: 0, max: poolSize },
    migrations: { migrationsList: migrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
    discovery: { warnWhenNoEntities: false },
    debug: false,
    allowGlobalContext: false,
    ensureDatabase: false,
  });
  const applied = shared
    ? await orm.em.fork().transactional(async (em) => {
        await em.execute("select pg_advisory_xact_lock(?)", [migrationLockId]);
        return orm.getMigrator().up({ transaction: em.getTransactionContext() });
      })
    : await orm.getMigrator().up();
  if (applied.length > 0) logger.info({ migrations: applied.map((m) => m.name) }, "database migrated");
  return orm;
}

export async function pingDatabase(orm: MikroORM): Promise<void> {
  await orm.em.getConnection().execute("select 1");
}
