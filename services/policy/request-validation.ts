import { create, type DescMessage, type Message } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator } from "@bufbuild/protovalidate";
import type { FieldViolation } from "../kernel/errors.js";

/**
 * Checks a request against the field rules of the contract (`buf.validate`
 * options in proto/): [] when it satisfies them, else one violation per rule
 * broken, in field order. A violation's field is the proto path
 * ("device.device_name", "identity.address.address_lines[0]"; a oneof that
 * must be set by the oneof's name). Rules that need state, several fields at
 * once, trimming or outside data stay with the handlers.
 *
 * Throws protovalidate's CompilationError or RuntimeError when a rule cannot be
 * compiled or evaluated: a bug in the contract, not a bad request.
 */
export type RequestValidator = (schema: DescMessage, message: Message) => FieldViolation[];

/**
 * protovalidate plans a message type on its first use (about 200 ms for our
 * request types): the types given are planned here, at start-up, so no caller
 * waits for it and a rule that cannot compile stops the start.
 */
export function createRequestValidator(requestTypes: Iterable<DescMessage>): RequestValidator {
  const validator = createValidator();
  const validate: RequestValidator = (schema, message) => {
    const result = validator.validate(schema, message);
    switch (result.kind) {
      case "valid":
        return [];
      case "invalid":
        return result.violations.map((v) => ({ field: pathToString(v.field), description: v.message }));
      case "error":
        throw result.error;
    }
  };
  for (const schema of requestTypes) validate(schema, create(schema));
  return validate;
}
