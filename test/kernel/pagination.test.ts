import { expect } from "chai";
import { decodePageToken, encodePageToken, pageSizeOf } from "../../services/kernel/pagination.js";
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
