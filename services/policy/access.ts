import { getOption, hasOption, type DescMethod, type DescService } from "@bufbuild/protobuf";
import type { RateLimitRule } from "../platform/config.js";
import { access, Caller, CaptchaRequirement, RateLimitKey } from "../../gen/portcullis/v1/policy_pb.js";

/** One rate-limit rule of a method, resolved against configuration. */
export interface MethodLimit {
  name: string;
  rule: RateLimitRule;
  key: RateLimitKey;
  /** For PHONE and EMAIL keys: the request field that holds the value. */
  field?: string;
  /** For IP keys: the looser rule an IPv6 client's wider prefix counts against. */
  wideRule?: RateLimitRule;
}

/** A method's access policy, read once from the contract and checked at start-up. */
export interface MethodPolicy {
  method: DescMethod;
  /** "/portcullis.v1.AuthService/SendOtp", as in logs and gRPC paths. */
  path: string;
  caller: Caller;
  minKycLevel: number;
  permissions: readonly string[];
  /** Limits keyed by what is known before authentication (ip, phone, email, global). */
  anonymousLimits: MethodLimit[];
  /** Limits keyed by the authenticated user, checked after authentication. */
  userLimits: MethodLimit[];
  /** The assurance level a user with a second factor must have reached in this session (0 and 1: none asked). */
  minAal: number;
  /** With minAal 2: how long ago the second factor may have been used, in seconds (0: any time in the session). */
  maxFactorAgeSeconds: number;
  captcha: CaptchaRequirement;
  /** For AFTER_FAILURES: the request field naming whom the call is about (phone number or email), whose failures count too. */
  captchaIdentifier?: { key: RateLimitKey.PHONE | RateLimitKey.EMAIL; field: string };
}

export class PolicyError extends Error {
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = "PolicyError";
  }
}

/** How many /64 clients' worth of calls the /48 around them gets before it is refused as one. */
const ipv6WideAllowance = 16;

const keyFields: Partial<Record<RateLimitKey, string>> = {
  [RateLimitKey.PHONE]: "phoneNumber",
  [RateLimitKey.EMAIL]: "email",
};

/**
 * Reads the `portcullis.v1.access` option of every method. A method without
 * a policy, or with one that cannot be enforced, stops start-up: the default is deny.
 */
export function readPolicies(
  services: readonly DescService[],
  rateLimits: Record<string, RateLimitRule>,
): Map<DescMethod, MethodPolicy> {
  const policies = new Map<DescMethod, MethodPolicy>();
  for (const service of services) {
    for (const method of service.methods) {
      const path = `/${service.typeName}/${method.name}`;
      if (!hasOption(method, access)) throw new PolicyError(path, "no (portcullis.v1.access) option: every RPC must declare who may call it");
      const option = getOption(method, access);
      if (option.caller === Caller.UNSPECIFIED) throw new PolicyError(path, "access.caller is unspecified");
      if (option.caller === Caller.PUBLIC && (option.minKycLevel > 0 || option.permissions.length > 0)) {
        throw new PolicyError(path, "a public method cannot require a KYC level or permissions");
      }
      checkStepUp(path, option.caller, option.minAal, option.maxFactorAgeSeconds);
      const limits = option.rateLimits.map((limit): MethodLimit => {
        const rule = rateLimits[limit.rule];
        if (!rule) throw new PolicyError(path, `rate-limit rule "${limit.rule}" is not configured`);
        if (limit.key === RateLimitKey.UNSPECIFIED) throw new PolicyError(path, `rate-limit rule "${limit.rule}" has no key`);
        if (limit.key === RateLimitKey.USER && option.caller === Caller.PUBLIC) {
          throw new PolicyError(path, `rate-limit rule "${limit.rule}" is keyed by user on a public method`);
        }
        const field = keyFields[limit.key];
        if (field && !method.input.fields.some((f) => f.localName === field && f.fieldKind === "scalar")) {
          throw new PolicyError(path, `rate-limit rule "${limit.rule}" needs a ${field} field in ${method.input.typeName}`);
        }
        const wideRule = limit.key === RateLimitKey.IP ? { ...rule, limit: rule.limit * ipv6WideAllowance } : undefined;
        return { name: limit.rule, rule, key: limit.key, field, wideRule };
      });
      policies.set(method, {
        method,
        path,
        caller: option.caller,
        minKycLevel: option.minKycLevel,
        permissions: option.permissions,
        anonymousLimits: limits.filter((l) => l.key !== RateLimitKey.USER),
        userLimits: limits.filter((l) => l.key === RateLimitKey.USER),
        minAal: option.minAal,
        maxFactorAgeSeconds: option.maxFactorAgeSeconds,
        captcha: option.captcha,
        captchaIdentifier: option.captcha === CaptchaRequirement.AFTER_FAILURES ? identifierField(method) : undefined,
      });
    }
  }
  return policies;
}

/** A step-up rule that the chain could not enforce, or would enforce differently from what it says, stops start-up. */
function checkStepUp(path: string, caller: Caller, minAal: number, maxFactorAgeSeconds: number): void {
  if (minAal > 2) throw new PolicyError(path, `access.min_aal is ${minAal}: assurance levels go up to 2`);
  if (maxFactorAgeSeconds > 0 && minAal !== 2) {
    throw new PolicyError(path, "access.max_factor_age_seconds needs min_aal: 2 (it is the age of the second factor)");
  }
  // Only a user's session has a second factor: on any other caller the rule would be accepted and never enforced.
  if (minAal > 0 && caller !== Caller.USER) {
    throw new PolicyError(path, "access.min_aal applies to user tokens only (CALLER_USER): a service or public caller has no second factor");
  }
}

/** The phone number or email a request names, when it has one: failures for one person count wherever they come from. */
function identifierField(method: DescMethod): MethodPolicy["captchaIdentifier"] {
  for (const key of [RateLimitKey.PHONE, RateLimitKey.EMAIL] as const) {
    const field = keyFields[key]!;
    if (method.input.fields.some((f) => f.localName === field && f.fieldKind === "scalar")) return { key, field };
  }
  return undefined;
}
