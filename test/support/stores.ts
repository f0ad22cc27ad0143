import { randomBytes } from "node:crypto";
import pg from "pg";

/**
 * Real Postgres and Redis for tests. Every call gets a database of its own
 * and every run a Redis key prefix of its own, so runs never collide.
 */
export const testDatabaseUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
export const testRedisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
export const runId = randomBytes(4).toString("hex");

const created: string[] = [];

export async function createTestDatabase(): Promise<string> {
  const name = `portcullis_test_${runId}_${created.length}`;
  await adminQuery(`create database ${name}`);
  created.push(name);
  const url = new URL(testDatabaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function dropTestDatabases(): Promise<void> {
  while (created.length > 0) await adminQuery(`drop database if exists ${created.pop()} with (force)`);
}

/** One statement on the test server's own database, outside any test database (create, drop, alter database). */
export async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: testDatabaseUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export function testKeyEncryptionKey(): string {
  return randomBytes(32).toString("base64");
}
