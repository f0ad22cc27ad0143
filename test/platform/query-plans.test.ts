import { randomBytes, randomUUID } from "node:crypto";
import { expect } from "chai";
import pg from "pg";
import { totpSql } from "../../services/auth/mfa-store.js";
import { migrations } from "../../services/migrations/index.js";
import { Database, type Sql } from "../../services/platform/database.js";
import { createLogger } from "../../services/platform/logger.js";
import { sessionStore } from "../../services/session/store.js";
import { userStore } from "../../services/users/store.js";
import { createTestDatabase, dropTestDatabases } from "../support/stores.js";

const origin = { clientIp: "127.0.0.1", userAgent: "query-plans", requestId: "query-plans" };
const idleTimeoutSeconds = 3_600;
const reuseIntervalSeconds = 60;
const bulkUsers = 1_000;
const bulkTokens = 1_000_000;

/** Sequential scans of `table` so far in the current transaction, by this connection. */
async function sequentialScans(tx: Sql, table: string): Promise<number> {
  const [row] = await tx.query<{ scans: string }>("select pg_stat_get_xact_numscans($1::regclass) as scans", [table]);
  return Number(row!.scans);
}

describe("Query plans on a table that grew", function () {
  // Building a million refresh tokens takes ~10 s on two busy cores.
  this.timeout(120_000);

  let url: string;
  let db: Database;
  let token: Buffer;
  let sessionId: string;

  before(async () => {
    // One connection: the plans a statement's early runs leave behind are the ones its later runs meet.
    url = await createTestDatabase();
    db = await Database.open(url, createLogger("silent"), { poolSize: 1, prepare: true }, migrations);
    const user = await userStore.createWithEmail(db, { id: randomUUID(), email: "plans@example.com", passwordHash: "x", displayName: "" });
    sessionId = randomUUID();
    token = randomBytes(32);
    await sessionStore.create(
      db,
      [
        {
          id: sessionId,
          userId: user!.id,
          deviceId: "device",
          deviceType: "WEB",
          deviceName: "browser",
          signInMethod: "PASSWORD",
          aal: 1,
          mfaTime: null,
          tokenHash: token,
          origin,
          event: "sign_in",
          detail: {},
        },
      ],
      { idleExpireTime: new Date(Date.now() + 3_600_000), expireTime: new Date(Date.now() + 86_400_000), maxPerUser: 10 },
    );
  });
  after(async () => {
    await db.close();
    await dropTestDatabases();
  });

  /** Rotates the session's current token, then looks the used one up as a reuse would. */
  async function refresh(sql: Sql) {
    const [used, successor] = [token, randomBytes(32)];
    const [rotated] = await sessionStore.rotate(sql, [{ tokenHash: used, successorHash: successor, origin }], idleTimeoutSeconds, totpSql.enrolled);
    token = successor;
    const reused = await sessionStore.usedToken(sql, used, successor, reuseIntervalSeconds, totpSql.enrolled);
    return { rotated, reused };
  }

  it("rotates refresh tokens through their index after refresh_token grew from a handful of rows to a million, not analysed since", async () => {
    // As autovacuum does after the first few dozen rows: from these statistics, a scan of the table's one page is the cheapest plan.
    await db.query("analyze app_user, session, refresh_token");
    // Past its fifth run Postgres may cache a generic plan for a statement, made for this nearly empty table.
    for (let run = 0; run < 10; run++) {
      const { rotated, reused } = await refresh(db);
      expect(rotated?.id).to.equal(sessionId);
      expect(reused).to.include({ id: sessionId, used: true, retry: true });
    }

    // Growth autovacuum has not caught up with: nothing analyses the tables (which would replan). On a connection of
    // its own, as another instance's: there a million foreign-key checks keep one cached plan (seconds, not half a minute).
    const grower = new pg.Client({ connectionString: url });
    await grower.connect();
    try {
      await grower.query(`insert into app_user (id, email) select gen_random_uuid(), 'bulk' || n || '@example.com' from generate_series(1, $1::int) n`, [
        bulkUsers,
      ]);
      await grower.query(
        `insert into session (id, user_id, device_id, device_type, device_name, ip_address, user_agent, sign_in_method, idle_expire_time, expire_time)
         select gen_random_uuid(), id, 'device', 'WEB', 'browser', '127.0.0.1', 'bulk', 'PASSWORD', now() + interval '1 hour', now() + interval '1 day'
         from app_user where email like 'bulk%'`,
      );
      // Hashes in key order and each session's tokens together keep both indexes' inserts cheap.
      await grower.query(
        `insert into refresh_token (token_hash, session_id, expire_time)
         select decode(lpad(to_hex(n), 64, '0'), 'hex'), s.id, now() + interval '1 day'
         from generate_series(0, $1::int - 1) n
         join (select id, row_number() over (order by id) - 1 as position from session where user_agent = 'bulk') s on s.position = n / ($1::int / $2::int)`,
        [bulkTokens, bulkUsers],
      );
    } finally {
      await grower.end();
    }

    // In a transaction only to read its own scan counters: the same prepared statements on the same connection.
    const { rotated, reused, scans } = await db.transaction(async (tx) => {
      const before = await sequentialScans(tx, "refresh_token");
      return { ...(await refresh(tx)), scans: (await sequentialScans(tx, "refresh_token")) - before };
    });
    expect(rotated?.id).to.equal(sessionId);
    expect(reused).to.include({ id: sessionId, used: true, retry: true });
    expect(scans, "sequential scans of refresh_token by the rotation and the reuse lookup").to.equal(0);
  });
});
