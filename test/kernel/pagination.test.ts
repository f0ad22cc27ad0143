import { expect } from "chai";
import { decodeExactPageToken, decodePageToken, encodePageToken, pageSizeOf } from "../../services/kernel/pagination.js";
import { violationsOf } from "../support/violations.js";

const id = "0daa7c49-a0e0-4ca4-a37c-a106943a0979";
const tokenOf = (text: string) => Buffer.from(text).toString("base64url");
const notOurs = { page_token: "not a token from a previous response" };

describe("Pagination", () => {
  describe("page tokens: where the last page ended, as (time, id)", () => {
    it("decodes what it encoded, to the millisecond", () => {
      const time = new Date("2026-01-02T03:04:05.678Z");
      const [decodedTime, decodedId] = decodePageToken(encodePageToken(time, id));
      expect(decodedTime.toISOString()).to.equal(time.toISOString());
      expect(decodedId).to.equal(id);
    });

    it("is URL-safe base64 without padding, so it travels in a query string as it is", () => {
      expect(encodePageToken(new Date("2026-01-02T03:04:05.678Z"), id)).to.match(/^[A-Za-z0-9_-]+$/);
    });

    it("accepts any time a row of ours can have: the years 2000 to 9999", () => {
      expect(decodePageToken(tokenOf(`2000-01-01T00:00:00.000Z|${id}`))[0].toISOString()).to.equal("2000-01-01T00:00:00.000Z");
      expect(decodePageToken(tokenOf(`9999-12-31T23:59:59.999Z|${id}`))[0].toISOString()).to.equal("9999-12-31T23:59:59.999Z");
    });

    it("refuses a forged or broken token with INVALID_ARGUMENT naming page_token", () => {
      const forged = {
        "empty": "",
        "not base64 of ours": "garbage",
        "no id": tokenOf("2026-01-01T00:00:00.000Z"),
        "an id that is not a UUID": tokenOf("2026-01-01T00:00:00.000Z|not-a-uuid"),
        "not a time": tokenOf(`yesterday|${id}`),
        "before 2000": tokenOf(`1999-12-31T23:59:59.999Z|${id}`),
        "past 9999, which JavaScript dates reach and Postgres does not": tokenOf(`+010000-01-01T00:00:00.000Z|${id}`),
        "JavaScript's earliest date": tokenOf(`-271821-04-20T00:00:00.000Z|${id}`),
      };
      for (const [kind, token] of Object.entries(forged)) expect(violationsOf(() => decodePageToken(token)), kind).to.deep.equal(notOurs);
    });

    describe("over rows with bigserial ids (the audit log)", () => {
      const time = new Date("2026-01-02T03:04:05.678Z");

      it("decodes what it encoded, ids up to Postgres's largest bigint", () => {
        for (const id of ["1", "123456789", "9223372036854775807"]) {
          expect(decodeExactPageToken(encodePageToken(time, id), "bigint"), id).to.deep.equal([time.toISOString(), id]);
        }
      });

      it("refuses a token of a listing by UUID, and any id that is not a bigint a row can have", () => {
        const forged = {
          "a UUID (another listing's token)": encodePageToken(time, id),
          "zero": encodePageToken(time, "0"),
          "negative": encodePageToken(time, "-5"),
          "a leading zero": encodePageToken(time, "0123"),
          "past the largest bigint": encodePageToken(time, "9223372036854775808"),
          "twenty digits": encodePageToken(time, "12345678901234567890"),
          "a fraction": encodePageToken(time, "1.5"),
          "no id": tokenOf(time.toISOString()),
        };
        for (const [kind, token] of Object.entries(forged)) expect(violationsOf(() => decodeExactPageToken(token, "bigint")), kind).to.deep.equal(notOurs);
        expect(violationsOf(() => decodePageToken(encodePageToken(time, "42"))), "a bigint token in a listing by UUID").to.deep.equal(notOurs);
      });
    });
  });

  describe("exact page tokens: Postgres's time to the microsecond", () => {
    it("gives back the time as Postgres wrote it, so rows of one transaction (one time) are not skipped", () => {
      const time = "2026-01-02T03:04:05.678901Z";
      expect(decodeExactPageToken(encodePageToken(time, id))).to.deep.equal([time, id]);
      expect(decodeExactPageToken(encodePageToken(time, "42"), "bigint")).to.deep.equal([time, "42"]);
      expect(decodePageToken(encodePageToken(time, id))[0].toISOString(), "to the millisecond").to.equal("2026-01-02T03:04:05.678Z");
    });

    it("refuses anything but a real UTC time in that form, which Postgres would read its own way or not at all", () => {
      const forged = {
        "30 February": tokenOf(`2026-02-30T00:00:00.000000Z|${id}`),
        "seven decimals": tokenOf(`2026-01-02T03:04:05.6789012Z|${id}`),
        "an offset": tokenOf(`2026-01-02T03:04:05.678+01:00|${id}`),
        "a date alone": tokenOf(`2026-01-02|${id}`),
        "words after the time": tokenOf(`2026-01-02T03:04:05Z; drop table app_user|${id}`),
      };
      for (const [kind, token] of Object.entries(forged)) expect(violationsOf(() => decodeExactPageToken(token)), kind).to.deep.equal(notOurs);
    });
  });

  describe("pageSizeOf (AIP-158)", () => {
    it("answers the default for 0", () => {
      expect(pageSizeOf(0)).to.equal(50);
      expect(pageSizeOf(0, 20)).to.equal(20);
    });

    it("answers the size asked for from 1 up to the maximum", () => {
      expect(pageSizeOf(1)).to.equal(1);
      expect(pageSizeOf(100)).to.equal(100);
    });
  });
});
