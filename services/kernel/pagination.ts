import { invalidArgument } from "./errors.js";
import { uuidPattern } from "./validation.js";

/**
 * Keyset pagination over (time, id): the token says where the last page
 * ended. Opaque to clients, and checked when it comes back. The time may be
 * Postgres's own text of it, to the microsecond (see decodeExactPageToken).
 */
export function encodePageToken(time: Date | string, id: string): string {
  return Buffer.from(`${typeof time === "string" ? time : time.toISOString()}|${id}`).toString("base64url");
}

/** The ids a listing's rows have: UUIDs, or bigserial numbers (the audit log's). */
export type PageIdKind = "uuid" | "bigint";

const maxBigint = 2n ** 63n - 1n;
const validIds: Record<PageIdKind, (id: string) => boolean> = {
  uuid: (id) => uuidPattern.test(id),
  bigint: (id) => /^[1-9]\d{0,18}$/.test(id) && BigInt(id) <= maxBigint,
};

/** UTC, in whole seconds or with up to six decimals (Postgres keeps microseconds). */
const isoTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

/**
 * The time as the token carries it, for a store to compare in Postgres to
 * the microsecond: rows written by one transaction share their time, and a
 * Date, cut to the millisecond, would skip those past a page's end.
 */
export function decodeExactPageToken(token: string, idKind: PageIdKind = "uuid"): [string, string] {
  const [time = "", id] = Buffer.from(token, "base64url").toString().split("|");
  const date = new Date(time);
  // Only times a row of ours can have: JavaScript dates reach far past what Postgres accepts, and roll 30 February over.
  const year = date.getUTCFullYear();
  const real = isoTime.test(time) && !Number.isNaN(year) && date.toISOString().slice(0, 19) === time.slice(0, 19);
  if (!real || year < 2000 || year > 9999 || !id || !validIds[idKind](id)) {
    throw invalidArgument([{ field: "page_token", description: "not a token from a previous response" }]);
  }
  return [time, id];
}

/** A token of a listing by UUID whose store compares times to the millisecond. */
export function decodePageToken(token: string): [Date, string] {
  const [time, id] = decodeExactPageToken(token);
  return [new Date(time), id];
}

/**
 * The SQL text of a timestamptz column as an exact page token carries it: UTC,
 * to the microsecond, which a Date (cut to the millisecond) would lose.
 */
export const pageTimeSql = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * A page of `pageSize` rows from a listing that fetched pageSize + 1: the
 * extra row only says there is more, and the token of the next page starts
 * after the page's last row. "" when this page is the last.
 */
export function pageOf<Row extends { page_time: string; id: string }>(rows: Row[], pageSize: number): { page: Row[]; nextPageToken: string } {
  const page = rows.slice(0, pageSize);
  const last = rows.length > pageSize ? page.at(-1) : undefined;
  return { page, nextPageToken: last ? encodePageToken(last.page_time, last.id) : "" };
}

/** AIP-158: 0 means the default. The contract refuses a size out of range rather than cutting it silently. */
export function pageSizeOf(requested: number, fallback = 50): number {
  return requested || fallback;
}
