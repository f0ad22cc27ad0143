import { Writable } from "node:stream";
import { expect } from "chai";
import pg from "pg";
import { createLogger } from "../../services/platform/logger.js";
import { testDatabaseUrl } from "../support/stores.js";

describe("Log lines", () => {
  it("name a database error by its SQLSTATE and constraint, never by the values Postgres quotes in it", async () => {
    const lines: string[] = [];
    const logger = createLogger("info", new Writable({ write(chunk, _encoding, done) { lines.push(String(chunk)); done(); } }));
    const client = new pg.Client({ connectionString: testDatabaseUrl });
    await client.connect();
    try {
      await client.query("create temporary table person (email text unique)");
      await client.query("insert into person values ($1)", ["ana@example.com"]);
      const error = await client.query("insert into person values ($1)", ["ana@example.com"]).catch((e: unknown) => e);
      expect((error as pg.DatabaseError).detail, "Postgres quotes the value").to.contain("ana@example.com");
      logger.error({ err: error }, "unexpected error");
    } finally {
      await client.end();
    }
    logger.flush();
    const logged = JSON.parse(lines.join(""));
    expect(logged.err).to.include({ sqlstate: "23505", constraint: "person_email_key" });
    expect(logged.err.stack, "where it was raised").to.be.a("string");
    expect(lines.join("")).not.to.contain("ana@example.com");
  });

  it("cut a data exception's message before the value it quotes", async () => {
    const lines: string[] = [];
    const logger = createLogger("info", new Writable({ write(chunk, _encoding, done) { lines.push(String(chunk)); done(); } }));
    const client = new pg.Client({ connectionString: testDatabaseUrl });
    await client.connect();
    const error = await client.query("select $1::uuid", ["ana@example.com"]).catch((e: unknown) => e);
    await client.end();
    expect((error as Error).message).to.contain("ana@example.com");
    logger.error({ err: error }, "unexpected error");
    logger.flush();
    expect(JSON.parse(lines.join("")).err).to.include({ sqlstate: "22P02", message: "invalid input syntax for type uuid" });
    expect(lines.join("")).not.to.contain("ana@example.com");
  });
});
