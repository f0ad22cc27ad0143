import { expect } from "chai";
import { checkPhoneNumber, maskPhone, phoneLimitKey, phonePrefix } from "../../services/auth/phone.js";

const anyCountry: string[] = [];

describe("Phone numbers codes are sent to", () => {
  describe("checkPhoneNumber", () => {
    it("accepts a mobile number in international form, however it is spaced, as one E.164 number with its country", () => {
      for (const spelling of ["+44 7400 123456", "+447400123456", " +44 (0)7400 123456 ", "+44-7400-123456"]) {
        expect(checkPhoneNumber(spelling, anyCountry), spelling).to.deep.equal({ ok: true, e164: "+447400123456", country: "GB" });
      }
      expect(checkPhoneNumber("+33 6 12 34 56 78", anyCountry)).to.deep.equal({ ok: true, e164: "+33612345678", country: "FR" });
    });

    it("requires the international form: a national or bare number is refused before it is parsed", () => {
      for (const national of ["07400 123456", "12345", ""]) {
        expect(checkPhoneNumber(national, anyCountry), national).to.deep.equal({
          ok: false,
          problem: "use the international form, starting with + and the country code",
        });
      }
    });

    it("refuses a number libphonenumber does not know as valid, such as a drama range or too few digits", () => {
      for (const invalid of ["+447700900123", "+12345", "+44 7400"]) {
        expect(checkPhoneNumber(invalid, anyCountry), invalid).to.deep.equal({ ok: false, problem: "not a valid phone number" });
      }
    });

    it("refuses a number with an extension, in every way an extension is written", () => {
      for (const withExtension of ["+44 7400 123456 ext. 12", "+447400123456;ext=9", "+44 7400 123456 x 12"]) {
        expect(checkPhoneNumber(withExtension, anyCountry), withExtension).to.deep.equal({
          ok: false,
          problem: "leave out the extension: codes go to a mobile number",
        });
      }
    });

    it("refuses numbers that cannot receive an SMS: fixed line, premium rate, toll free, UAN and pager", () => {
      const notMobile = {
        "fixed line": "+44 20 7946 0958",
        "premium rate": "+44 909 879 0000",
        "US premium rate": "+1 900 555 0123",
        "toll free": "+44 800 123 4567",
        "UAN": "+44 55 1234 5678",
        "pager": "+44 7623 123456",
        "French fixed line": "+33 1 23 45 67 89",
      };
      for (const [kind, number] of Object.entries(notMobile)) {
        expect(checkPhoneNumber(number, anyCountry), kind).to.deep.equal({ ok: false, problem: "not a mobile number: codes are sent by SMS" });
      }
    });

    it("accepts a number from a range that mixes fixed lines and mobiles, as the US and Canada have", () => {
      expect(checkPhoneNumber("+1 650 253 0000", anyCountry)).to.deep.equal({ ok: true, e164: "+16502530000", country: "US" });
    });

    it("sends only to the allowed countries when some are listed, and to any country when none is", () => {
      expect(checkPhoneNumber("+33 6 12 34 56 78", ["GB", "FR"])).to.deep.include({ ok: true, country: "FR" });
      expect(checkPhoneNumber("+49 1512 3456789", ["GB", "FR"])).to.deep.equal({ ok: false, problem: "codes are not sent to numbers of this country" });
      expect(checkPhoneNumber("+49 1512 3456789", anyCountry)).to.deep.include({ ok: true, country: "DE" });
    });

    it("places a +44 number in the territory its range belongs to, so a Guernsey mobile is not a GB number", () => {
      expect(checkPhoneNumber("+44 7911 123456", anyCountry)).to.deep.include({ ok: true, e164: "+447911123456", country: "GG" });
      expect(checkPhoneNumber("+44 7911 123456", ["GB"])).to.deep.equal({ ok: false, problem: "codes are not sent to numbers of this country" });
    });
  });

  describe("phoneLimitKey", () => {
    it("maps every spelling of one number to the one E.164 key the handler uses", () => {
      const spellings = ["+44 7400 123456", "+44 (0)7400 123456", "+447400123456", "+44-7400-123456", "  +44 7400 123456  "];
      expect(new Set(spellings.map(phoneLimitKey))).to.deep.equal(new Set(["+447400123456"]));
      expect(phoneLimitKey("+447400123456 ext. 12"), "an extension is not a separate number").to.equal("+447400123456");
    });

    it("keys even a number checkPhoneNumber refuses by its E.164 form, so refused tries count against it too", () => {
      expect(phoneLimitKey("+44 7700 900123")).to.equal("+447700900123");
      expect(phoneLimitKey("+44 20 7946 0958")).to.equal("+442079460958");
    });

    it("keeps input it cannot read as a number as it came", () => {
      expect(phoneLimitKey("not a number")).to.equal("not a number");
      expect(phoneLimitKey("07400 123456")).to.equal("07400 123456");
    });
  });

  describe("phonePrefix", () => {
    it("is the country calling code and the first national digits, whatever the calling code's length", () => {
      expect(phonePrefix("+447400123456", 6)).to.equal("+44740012");
      expect(phonePrefix("+12015550123", 6), "area code and exchange").to.equal("+1201555");
      expect(phonePrefix("+33612345678", 4)).to.equal("+336123");
    });
  });

  describe("maskPhone", () => {
    it("keeps the first three and last two characters and stars the rest", () => {
      expect(maskPhone("+447400123456")).to.equal("+44********56");
      expect(maskPhone("+33612345678")).to.equal("+33*******78");
    });

    it("stars nothing in a string too short to hide anything, rather than failing", () => {
      expect(maskPhone("+1234")).to.equal("+1234");
      expect(maskPhone("+12")).to.equal("+1212");
    });
  });
});
