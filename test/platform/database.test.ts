import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import pg from "pg";
import { migrations } from "../../services/migrations/index.js";
import { Database } from "../../services/platform/database.js";
import { createLogger } from "../../services/platform/logger.js";
import { createTestDatabase, dropTestDatabases, testDatabaseUrl } from "../support/stores.js";

describe("The database", () => {
  let db: Database;
  before(async () => {
    db = await Database.open(await createTestDatabase(), createLogger("silent"), { poolSize: 2, prepare: true }, migrations);
  });
  after(async () => {
    await db.close();
    await dropTestDatabases();
  });

  it("survives Postgres ending a connection in the middle of a transaction, and serves the next call", async () => {
    const transaction = db.transaction(async (tx) => {
      const [{ pid }] = (await tx.query<{ pid: number }>("select pg_backend_pid() as pid")) as [{ pid: number }];
      const admin = new pg.Client({ connectionString: testDatabaseUrl });
      await admin.connect();
      await admin.query("select pg_terminate_backend($1)", [pid]);
      await admin.end();
      // The connection's 'error' arrives while the transaction holds it: the process must not crash.
      await sleep(200);
      await tx.query("select 1");
    });
    const error = await transaction.catch((e: unknown) => e);
    expect(error).to.be.instanceOf(Error);
    expect(await db.query("select 1 as one")).to.deep.equal([{ one: 1 }]);
  });

  it("runs a statement's values as parameters, never as SQL", async () => {
    const [row] = await db.query<{ value: string }>("select $1::text as value", ["'); drop table app_user; --"]);
    expect(row!.value).to.equal("'); drop table app_user; --");
    expect(await db.query("select 1 from app_user limit 1")).to.be.an("array");
  });
});
