import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { detail, errorDomain } from "../kernel/errors.js";

/** The chain's PERMISSION_DENIED answers, with the ErrorInfo reason a client acts on. */

export function kycLevelRequired(required: number, current: number): ConnectError {
  return permissionDenied("KYC_LEVEL_REQUIRED", `this call needs KYC level ${required}; the token carries level ${current}`, {
    required_level: String(required),
    current_level: String(current),
  });
}

export function permissionDenied(reason: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return new ConnectError(message, Code.PermissionDenied, undefined, [detail(ErrorInfoSchema, { reason, domain: errorDomain, metadata })]);
}
