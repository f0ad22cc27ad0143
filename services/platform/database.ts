import { MikroORM, type EntitySchema } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import type { Logger } from "./logger.js";
import { migrations } from "./migrations/index.js";

export type { MikroORM };

/** Several instances may start at once: one migrates while the others wait for it. */
const migrationLockId = 0x6d696772; // "migr"

/** Opens MikroORM on Postgres and applies the committed migrations. */
export async function openDatabase(
  url: string,
  entities: EntitySchema<any, any>[],
  logger: Logger,
  poolSize = 10,
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
  const applied = await orm.em.fork().transactional(async (em) => {
    await em.execute("select pg_advisory_xact_lock(?)", [migrationLockId]);
    return orm.getMigrator().up({ transaction: em.getTransactionContext() });
  });
  if (applied.length > 0) logger.info({ migrations: applied.map((m) => m.name) }, "database migrated");
  return orm;
}

export async function pingDatabase(orm: MikroORM): Promise<void> {
  await orm.em.getConnection().execute("select 1");
}
