import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { textProblem, uuidPattern, Violations } from "../../services/kernel/validation.js";

/** The error a collector with violations throws. */
function refusal(violations: Violations): ConnectError {
  try {
    violations.throwIfAny();
  } catch (error) {
    return error as ConnectError;
  }
  throw new Error("throwIfAny threw nothing");
}

describe("Request validation helpers", () => {
  describe("textProblem: free text", () => {
    it("accepts text within its bounds", () => {
      expect(textProblem("Ana", 1, 200)).to.equal(undefined);
      expect(textProblem("", 0, 100), "an optional field left empty").to.equal(undefined);
    });

    it("calls text below a minimum of 1 required, and names any other minimum", () => {
      expect(textProblem("", 1, 200)).to.equal("required");
      expect(textProblem("A", 2, 200)).to.equal("at least 2 characters");
    });

    it("names the maximum when the text is longer", () => {
      expect(textProblem("x".repeat(200), 1, 200)).to.equal(undefined);
      expect(textProblem("x".repeat(201), 1, 200)).to.equal("at most 200 characters");
    });

    it("counts characters, not UTF-16 units: an emoji is one", () => {
      expect(textProblem("😀".repeat(3), 1, 3), "6 UTF-16 units").to.equal(undefined);
      expect(textProblem("😀".repeat(4), 1, 3)).to.equal("at most 3 characters");
      expect(textProblem("李明", 2, 200), "two characters").to.equal(undefined);
    });

    it("refuses NUL, DEL and the other control characters, but lets tab, CR and LF through", () => {
      for (const control of ["\u0000", "\u0001", "\u0008", "\u000b", "\u000c", "\u000e", "\u001f", "\u007f"]) {
        expect(textProblem(`a${control}b`, 1, 200), JSON.stringify(control)).to.equal("contains a control character");
      }
      expect(textProblem("line one\r\nline\ttwo", 1, 200)).to.equal(undefined);
    });

    it("names a control character before any length problem", () => {
      expect(textProblem("\u0000", 2, 200)).to.equal("contains a control character");
    });
  });

  describe("Violations: every problem of a request in one answer", () => {
    it("throws nothing when nothing was found, and ignores checks that passed (undefined)", () => {
      expect(() => new Violations().add("name", undefined).throwIfAny()).not.to.throw();
    });

    it("throws one INVALID_ARGUMENT naming every field at fault, in the order found, with a message that lists them", () => {
      const error = refusal(new Violations().add("display_name", "required").add("email", undefined).add("password", "use at least 8 characters"));
      expect(error.code).to.equal(Code.InvalidArgument);
      expect(error.rawMessage).to.equal("display_name: required; password: use at least 8 characters");
      expect(error.findDetails(BadRequestSchema).map((b) => b.fieldViolations.map((f) => [f.field, f.description]))).to.deep.equal([
        [["display_name", "required"], ["password", "use at least 8 characters"]],
      ]);
    });

    it("carries the BadRequest as a { desc, value } detail, as the gRPC adapter expects", () => {
      const [detail] = refusal(new Violations().add("email", "not an email address")).details as { desc: unknown; value: { fieldViolations: { field: string }[] } }[];
      expect(detail!.desc).to.equal(BadRequestSchema);
      expect(detail!.value.fieldViolations.map((f) => f.field)).to.deep.equal(["email"]);
    });
  });

  describe("uuidPattern", () => {
    it("matches a UUID with dashes, in either case, and nothing else", () => {
      expect(uuidPattern.test("0daa7c49-a0e0-4ca4-a37c-a106943a0979")).to.equal(true);
      expect(uuidPattern.test("0DAA7C49-A0E0-4CA4-A37C-A106943A0979")).to.equal(true);
      for (const other of ["0daa7c49a0e04ca4a37ca106943a0979", "0daa7c49-a0e0-4ca4-a37c-a106943a097", " 0daa7c49-a0e0-4ca4-a37c-a106943a0979", "not-a-uuid"]) {
        expect(uuidPattern.test(other), other).to.equal(false);
      }
    });
  });
});
