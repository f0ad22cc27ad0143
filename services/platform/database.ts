import type { MigrationObject } from "@mikro-orm/core";
import { MikroORM } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import { SpanKind } from "@opentelemetry/api";
import pg from "pg";
import type { Logger } from "./logger.js";
import { dbStatementDuration, reportPool } from "./metrics.js";
import { inChildSpan, tracingOn } from "./tracing.js";

/** Anything that runs SQL: the pool, or the one connection of a transaction. */
export interface Sql {
  query<Row = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<Row[]>;
}

export interface DatabaseOptions {
  poolSize: number;
  /**
   * Prepare each statement once per connection. Off for the embedded PGlite,
   * which serves every connection from one backend session, where two
   * connections' statements of the same name would collide.
   */
  prepare: boolean;
}

type StatementDuration = ReturnType<typeof dbStatementDuration.labels>;

/** Several instances may start at once: one migrates while the others wait for it. */
const migrationLockId = 0x6d696772; // "migr"
const purgePageSize = 1000;
/** Statement texts are constants of the code; past this many, something builds SQL from values: stop preparing. */
const maxPreparedStatements = 500;
/**
 * Postgres plans every run of a prepared statement for its values. Past a
 * statement's fifth run it may otherwise keep one generic plan for it until
 * its tables are next analysed, and one made while a table was nearly empty
 * scans it whole, whatever the statement's shape (foreign-key checks too):
 * measured here, the rotation then read all of a 1 M-row refresh_token for
 * each token (~0.5 s a rotation). Once its tables were large the rotation was
 * planned afresh at every run anyway; the price is ~40 µs of planning for each
 * small statement and each foreign-key check that would have kept a plan.
 */
const planEveryRun = "-c plan_cache_mode=force_custom_plan";
/** The first keywords statement times are reported by; any other is "other". */
const statementCommands = ["select", "insert", "update", "delete", "with"];
const durationByCommand = new Map([...statementCommands, "other"].map((command) => [command, dbStatementDuration.labels(command)]));

/**
 * What the statement does to which table, read outside its parentheses (so
 * not a CTE's or a function's): "select otp_challenge", "insert audit_event".
 */
function statementName(text: string): string {
  let outer = text.toLowerCase();
  for (let inner = outer.replace(/\([^()]*\)/g, " "); inner !== outer; inner = outer.replace(/\([^()]*\)/g, " ")) outer = inner;
  const verb = /\b(select|insert|update|delete)\b/.exec(outer)?.[1] ?? /^\s*(\w+)/.exec(outer)?.[1] ?? "sql";
  const table = /\b(?:from|into|update)\s+([a-z_][\w.]*)/.exec(outer)?.[1];
  // A batch statement reads its rows from a CTE: name the first real table the CTEs touch instead.
  const ctes = new Set([...text.toLowerCase().matchAll(/\b(\w+)\s+as\s*\(/g)].map((match) => match[1]));
  if (table && ctes.has(table)) {
    const touched = [...text.toLowerCase().matchAll(/\b(?:from|into|update)\s+([a-z_][\w.]*)\b(?!\s*\()/g)].find((match) => !ctes.has(match[1]!));
    if (touched) return `with ${touched[1]}`;
  }
  return table ? `${verb} ${table}` : verb;
}

/** A span named by the statement; the text goes with it (values are never part of it), the values never. */
function tracedQuery<Row extends pg.QueryResultRow>(runner: pg.Pool | pg.PoolClient, query: pg.QueryConfig, name: string): Promise<pg.QueryResult<Row>> {
  return inChildSpan(name, SpanKind.CLIENT, { "db.system": "postgresql", "db.statement": query.text }, () => runner.query<Row>(query));
}

/** What is kept of a statement text, worked out on its first run. */
interface KnownStatement {
  /** The prepared statement's name; none when statements are not prepared. */
  preparedAs?: string;
  duration: StatementDuration;
  /** Read only while tracing. */
  spanName?: string;
}

/**
 * Postgres for every domain: parameterised SQL over a `pg` pool. Values never
 * become part of the SQL text (so they never reach an error message either),
 * and each statement is parsed once per connection and planned for its values
 * at every run (see `planEveryRun`): measured here, that saves ~10% of the
 * database's CPU for a rotation of one token against parsing it each time, and
 * ~90 µs of Node CPU per statement against building SQL through the ORM.
 * MikroORM owns the schema: its migrator applies the committed migrations at
 * start-up.
 */
export class Database implements Sql {
  private readonly statements = new Map<string, KnownStatement>();

  private constructor(
    private readonly pool: pg.Pool,
    private readonly prepare: boolean,
    private readonly stopReporting: () => void,
  ) {}

  /** Applies the migrations, in order and one instance at a time, then opens the pool. */
  static async open(url: string, logger: Logger, options: DatabaseOptions, migrations: MigrationObject[]): Promise<Database> {
    const pool = new pg.Pool({
      connectionString: url,
      // Unprepared statements are planned for their values anyway.
      options: options.prepare ? planEveryRun : undefined,
      max: options.poolSize,
      connectionTimeoutMillis: 10_000,
      // A new connection's first statements cost Postgres 1.5-2 times what later ones do, and are prepared again: keep them.
      idleTimeoutMillis: 10 * 60_000,
    });
    // A pooled connection that dies while idle (Postgres restarted) is replaced on next use; without a listener it would crash the process.
    pool.on("error", (error) => logger.warn({ err: { message: error.message } }, "an idle database connection failed"));
    const database = new Database(pool, options.prepare, reportPool(pool));
    try {
      await database.migrate(url, migrations, logger);
      return database;
    } catch (error) {
      await database.close();
      throw error;
    }
  }

  async query<Row = Record<string, unknown>>(text: string, params: readonly unknown[] = []): Promise<Row[]> {
    return this.run<Row>(this.pool, text, params);
  }

  /** Runs `work` in one transaction on one connection: commits if it returns, rolls back if it throws. */
  async transaction<T>(work: (tx: Sql) => Promise<T>): Promise<T> {
    const { client, release } = await this.checkOut();
    let broken: Error | undefined;
    try {
      await client.query("begin");
      const result = await work({ query: (text, params = []) => this.run(client, text, params) });
      await client.query("commit");
      return result;
    } catch (error) {
      // A connection that cannot even roll back is not handed out again.
      await client.query("rollback").catch((rollbackError: Error) => (broken = rollbackError));
      throw error;
    } finally {
      release(broken);
    }
  }

  /**
   * Deletes the rows of `table` matching `condition`, a page at a time, with
   * SKIP LOCKED so several instances can work through one table at once
   * without waiting on each other or deleting twice. Returns how many went.
   */
  async deleteInPages(table: string, key: string, condition: string, params: readonly unknown[] = []): Promise<number> {
    let total = 0;
    for (;;) {
      const rows = await this.query(
        `delete from ${table} where ${key} in (
           select ${key} from ${table} where ${condition} limit ${purgePageSize} for update skip locked)
         returning 1`,
        params,
      );
      total += rows.length;
      if (rows.length < purgePageSize) return total;
    }
  }

  async ping(): Promise<void> {
    await this.pool.query("select 1");
  }

  close(): Promise<void> {
    this.stopReporting();
    return this.pool.end();
  }

  /** One statement on the pool or a transaction's connection, timed by its first keyword. */
  private async run<Row>(runner: pg.Pool | pg.PoolClient, text: string, params: readonly unknown[]): Promise<Row[]> {
    const started = performance.now();
    const known = this.known(text);
    const query: pg.QueryConfig = { name: known.preparedAs, text, values: params as unknown[] };
    try {
      const result = tracingOn
        ? await tracedQuery<Row & pg.QueryResultRow>(runner, query, (known.spanName ??= statementName(text)))
        : await runner.query<Row & pg.QueryResultRow>(query);
      return result.rows;
    } finally {
      known.duration.observe((performance.now() - started) / 1000);
    }
  }

  /**
   * Statement texts are constants of the code: each is worked out once. Past
   * `maxPreparedStatements` something builds SQL from values, and those are
   * neither kept nor prepared.
   */
  private known(text: string): KnownStatement {
    const kept = this.statements.get(text);
    if (kept) return kept;
    const keyword = /^\s*(\w+)/.exec(text)?.[1]?.toLowerCase() ?? "";
    const duration = durationByCommand.get(statementCommands.includes(keyword) ? keyword : "other")!;
    if (this.statements.size >= maxPreparedStatements) return { duration };
    const known: KnownStatement = { duration, preparedAs: this.prepare ? `portcullis_${this.statements.size}` : undefined };
    this.statements.set(text, known);
    return known;
  }

  /**
   * A connection of our own for a while. pg-pool stops listening for its
   * errors while it is checked out, and a connection Postgres ends then (a
   * restart, a failover) would crash the process with an unhandled 'error':
   * it is noted instead, and the connection is not handed out again.
   */
  private async checkOut() {
    const client = await this.pool.connect();
    let failure: Error | undefined;
    const noteFailure = (error: Error) => (failure = error);
    client.on("error", noteFailure);
    return {
      client,
      /** Back to the pool, or closed when it failed or `discard` says so. */
      release(discard?: Error | boolean) {
        client.off("error", noteFailure);
        client.release(discard ?? failure);
      },
    };
  }

  /**
   * Under a session-level advisory lock, so instances starting together
   * migrate once; the migrator uses a connection of its own, and each
   * migration is one transaction.
   */
  private async migrate(url: string, migrations: MigrationObject[], logger: Logger): Promise<void> {
    const { client: lock, release } = await this.checkOut();
    let unlocked = true;
    try {
      await lock.query("select pg_advisory_lock($1)", [migrationLockId]);
      const orm = await MikroORM.init({
        clientUrl: url,
        entities: [],
        extensions: [Migrator],
        pool: { min: 0, max: 1 },
        migrations: { migrationsList: migrations, transactional: true, allOrNothing: true, snapshot: false, silent: true },
        discovery: { warnWhenNoEntities: false },
        debug: false,
        allowGlobalContext: false,
        ensureDatabase: false,
      });
      try {
        const applied = await orm.getMigrator().up();
        if (applied.length > 0) logger.info({ migrations: applied.map((m) => m.name) }, "database migrated");
      } finally {
        await orm.close();
      }
    } finally {
      await lock.query("select pg_advisory_unlock($1)", [migrationLockId]).catch(() => (unlocked = false));
      // A connection still holding the lock is closed, which releases it, rather than kept in the pool.
      release(unlocked ? undefined : true);
    }
  }
}
