import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
import type { DatabaseOptions } from "./database.js";
import type { Logger } from "./logger.js";

/**
 * The embedded default: real Postgres (PGlite, compiled to WASM) served over the
 * wire protocol on a loopback port, so `pg`, MikroORM and the migrations run
 * unchanged. One process, one data folder: a single-instance mode for trying
 * Portcullis out, never for production.
 */
export interface EmbeddedPostgres {
  url: string;
  options: DatabaseOptions;
  stop(): Promise<void>;
}

/**
 * pglite-socket serves every connection from PGlite's one backend session and
 * interleaves their protocol messages: one pooled connection keeps a
 * statement's Parse, Bind and Execute together, and unnamed statements cannot
 * collide across reconnections. The migrator's connection is the second, plus
 * one spare for a connection being replaced.
 */
const embeddedOptions: DatabaseOptions = { poolSize: 1, prepare: false };
const maxConnections = 3;

export async function startEmbeddedPostgres(dataDir: string): Promise<EmbeddedPostgres> {
  mkdirSync(dataDir, { recursive: true });
  const releaseLock = lockDataDir(dataDir);
  let db: PGlite | undefined;
  let server: PGLiteSocketServer;
  try {
    db = await PGlite.create(join(dataDir, "pg"));
    server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections });
    await server.start();
  } catch (error) {
    // Or a retry in this process would find the folder "in use" by itself.
    await db?.close().catch(() => {});
    releaseLock();
    throw error;
  }
  return {
    url: `postgres://postgres@${server.getServerConn()}/postgres?sslmode=disable`,
    options: embeddedOptions,
    async stop() {
      await server.stop();
      await db!.close();
      releaseLock();
    },
  };
}

/** PGlite is one process's database: a second process on the same folder would corrupt it. */
function lockDataDir(dataDir: string): () => void {
  const path = join(dataDir, "portcullis.pid");
  if (existsSync(path)) {
    const pid = Number(readFileSync(path, "utf8"));
    if (pid && isAlive(pid)) {
      throw new Error(`the embedded database in ${dataDir} is in use by process ${pid}; stop it first (or set DATA_DIR)`);
    }
  }
  writeFileSync(path, String(process.pid));
  return () => rmSync(path, { force: true });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The key-encryption key of the embedded mode, created once and kept in the data folder. */
export function embeddedKeyEncryptionKey(dataDir: string, logger: Logger): Buffer {
  const path = join(dataDir, "key-encryption-key");
  if (!existsSync(path)) {
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(path, randomBytes(32).toString("base64"), { mode: 0o600 });
  }
  logger.warn(
    { path },
    "KEY_ENCRYPTION_KEY is not set: using a key kept next to the data it protects; set KEY_ENCRYPTION_KEY in any real deployment",
  );
  return Buffer.from(readFileSync(path, "utf8"), "base64");
}
