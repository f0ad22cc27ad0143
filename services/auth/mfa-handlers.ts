import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "../kernel/call.js";
import { MfaService, type SecondFactor } from "../../gen/portcullis/v1/mfa_service_pb.js";
import type { MfaSignIn } from "./mfa-sign-in.js";
import type { SecondFactorProof } from "./second-factors.js";
import type { StepUps } from "./step-up.js";
import type { TotpEnrollment } from "./totp-enrollment.js";

export interface MfaDeps {
  mfaSignIn: MfaSignIn;
  stepUps: StepUps;
  totp: TotpEnrollment;
}

export function mfaHandlers(deps: MfaDeps): ServiceHandlers<typeof MfaService> {
  return {
    enrollTotp: (_request, call) => deps.totp.enroll(call.principal!.subject, call),

    async confirmTotp(request, call) {
      return { recoveryCodes: await deps.totp.confirm(call.principal!, request, call) };
    },

    async disableTotp(request, call) {
      await deps.totp.disable(call.principal!.subject, proofOf(request.proof!), call);
      return {};
    },

    async regenerateRecoveryCodes(request, call) {
      return { recoveryCodes: await deps.totp.regenerateRecoveryCodes(call.principal!.subject, proofOf(request.proof!), call) };
    },

    verifyMfa: (request, call) => deps.mfaSignIn.verify(request.challengeId, proofOf(request.proof!), call),

    async stepUp(request, call) {
      const stepped = await deps.stepUps.stepUp(call.principal!, proofOf(request.proof!), call);
      return { accessToken: stepped.accessToken, accessTokenExpireTime: timestampFromDate(stepped.expiresAt) };
    },
  };
}

/** The request's proof; the contract requires one of its two codes, and the chain has checked that. */
function proofOf(proof: SecondFactor): SecondFactorProof {
  return proof.factor.case === "totpCode" ? { totpCode: proof.factor.value } : { recoveryCode: proof.factor.value ?? "" };
}
