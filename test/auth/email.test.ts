import { expect } from "chai";
import { emailProblem, normalizeEmail } from "../../services/auth/email.js";

describe("Email addresses", () => {
  describe("normalizeEmail: one spelling per address", () => {
    it("lower-cases the address and trims surrounding space", () => {
      expect(normalizeEmail("  Ana.Pereira@Example.COM \n")).to.equal("ana.pereira@example.com");
    });
  });

  describe("emailProblem", () => {
    it("accepts something@domain.tld, in any case and any script", () => {
      for (const email of ["ana@example.com", "a@b.c", "Ana.Pereira@Example.COM", "ñandú@ejemplo.es"]) expect(emailProblem(email), email).to.equal(undefined);
    });

    it("calls an empty address required", () => {
      expect(emailProblem("")).to.equal("required");
    });

    it("allows at most 254 characters", () => {
      const domain = "@example.com";
      expect(emailProblem("x".repeat(254 - domain.length) + domain)).to.equal(undefined);
      expect(emailProblem("x".repeat(255 - domain.length) + domain)).to.equal("at most 254 characters");
    });

    it("refuses a domain without a dot, a second @, and any space or control character, even at the ends: callers normalize first", () => {
      for (const email of ["a@b", "ana@@example.com", "ana @example.com", " ana@example.com", "ana@example.com\n", "a\u0000b@example.com"]) {
        expect(emailProblem(email), JSON.stringify(email)).to.equal("not an email address");
      }
    });
  });
});
