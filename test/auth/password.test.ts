import { expect } from "chai";
import { hashPassword, passwordProblem, verifyPassword } from "../../services/auth/password.js";

describe("Passwords", () => {
  describe("passwordProblem: length and a blocklist, no composition rules (NIST 800-63B)", () => {
    it("accepts a long passphrase of plain lower-case words", () => {
      expect(passwordProblem("correct horse battery staple", "ana@example.com")).to.equal(undefined);
    });

    it("wants 8 to 128 characters", () => {
      expect(passwordProblem("x7#kq2!")).to.equal("use at least 8 characters");
      expect(passwordProblem("x7#kq2!m")).to.equal(undefined);
      expect(passwordProblem("k".repeat(128))).to.equal(undefined);
      expect(passwordProblem("k".repeat(129))).to.equal("use at most 128 characters");
    });

    it("counts characters, not UTF-16 units: an emoji is one", () => {
      expect(passwordProblem("😀".repeat(7)), "14 UTF-16 units").to.equal("use at least 8 characters");
      expect(passwordProblem("😀".repeat(8))).to.equal(undefined);
      expect(passwordProblem("😀".repeat(128)), "256 UTF-16 units").to.equal(undefined);
      expect(passwordProblem("😀".repeat(129))).to.equal("use at most 128 characters");
    });

    it("refuses a password from the common-passwords list, in any case", () => {
      for (const common of ["password", "PassWord", "PASSWORD1", "12345678", "iloveyou", "baseball"]) {
        expect(passwordProblem(common), common).to.equal("this password is too common; choose another");
      }
    });

    it("refuses a password containing the email's local part, in any case, once that part has 4 characters or more", () => {
      const refused = "do not use your email address in the password";
      expect(passwordProblem("ana.smith-rocks-2024", "ana.smith@example.com")).to.equal(refused);
      expect(passwordProblem("my name is anna!", "ANNA@example.com")).to.equal(refused);
      expect(passwordProblem("my name is bob!!", "bob@example.com"), "a 3-character local part is too short to matter").to.equal(undefined);
      expect(passwordProblem("my name is anna!"), "no email").to.equal(undefined);
    });
  });

  describe("hashPassword and verifyPassword", () => {
    const password = "correct horse battery staple";
    let stored: string;
    before(async () => {
      stored = await hashPassword(password);
    });

    it("hashes with argon2id at OWASP's parameters, salted, so one password never hashes alike twice", async () => {
      expect(stored).to.match(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      expect(await hashPassword(password)).not.to.equal(stored);
    });

    it("verifies the password against its hash, and refuses any other", async () => {
      expect(await verifyPassword(stored, password)).to.equal(true);
      expect(await verifyPassword(stored, "Correct horse battery staple")).to.equal(false);
    });

    it("never verifies against an unknown hash (an unknown email) or one it cannot read", async () => {
      expect(await verifyPassword(undefined, password)).to.equal(false);
      expect(await verifyPassword(undefined, "")).to.equal(false);
      expect(await verifyPassword("not an argon2 hash", password)).to.equal(false);
    });
  });
});
