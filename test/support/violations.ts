import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";

/**
 * Runs a check that must refuse its input, and answers the field violations
 * its INVALID_ARGUMENT error carries in the BadRequest detail, as
 * { field: description }.
 */
export function violationsOf(check: () => unknown): Record<string, string> {
  let thrown: unknown;
  try {
    check();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, "the check refused its input").to.be.instanceOf(ConnectError);
  const error = thrown as ConnectError;
  expect(error.code).to.equal(Code.InvalidArgument);
  const [badRequest, ...others] = error.findDetails(BadRequestSchema);
  expect(others, "one BadRequest detail").to.have.length(0);
  const violations = badRequest!.fieldViolations.map((v) => [v.field, v.description] as const);
  expect(new Set(violations.map(([field]) => field)).size, "each field named once").to.equal(violations.length);
  return Object.fromEntries(violations);
}
