/*
 * Kept apart from database.ts, which loads pg and MikroORM: the chain asks
 * this of every unexpected error, and services behind the guard run the chain
 * without a database.
 */

/**
 * SQLSTATEs that mean the database, not the statement, failed: the backend was
 * ended (57P01 admin shutdown, 57P02 crash shutdown), is starting or shutting
 * down (57P03), has no connection to spare (53300), or the connection broke (08xxx).
 */
const unavailableStates = /^(57P0[123]|53300|08...)$/;
const unavailableSocketCodes = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"]);
/** What pg and pg-pool say, with no code, when a connection is lost or cannot be had in time. */
const unavailableMessages = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed)/;

/**
 * Whether `error` says Postgres cannot be reached or has dropped us, rather
 * than that a statement is wrong: a caller may retry the first, never the
 * second. A FATAL error always ends its session, so it is one of the first
 * (a database refusing connections answers one on connect). Follows `cause`
 * and the attempts of an AggregateError (one per address tried).
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const { code, severity } = error as { code?: unknown; severity?: unknown };
  if (severity === "FATAL" || severity === "PANIC") return true;
  if (typeof code === "string" && (unavailableStates.test(code) || unavailableSocketCodes.has(code))) return true;
  if (unavailableMessages.test(error.message)) return true;
  if (error instanceof AggregateError && error.errors.some(isDatabaseUnavailable)) return true;
  return isDatabaseUnavailable(error.cause);
}

/** Postgres refused a row that a unique index already holds (SQLSTATE 23505): usually a race that another call won. */
export function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | undefined)?.code === "23505";
}
