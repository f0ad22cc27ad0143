import type { ServiceHandlers } from "../kernel/call.js";
import { invalidArgument } from "../kernel/errors.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "../kernel/pagination.js";
import { textProblem, uuidPattern, Violations } from "../kernel/validation.js";
import { KycStatus } from "../../gen/portcullis/v1/common_pb.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";
import { maxLevel, type Kyc } from "./kyc.js";
import { checkBasicIdentity, checkDueDiligence, checkIdentityDocument, levelRequirements } from "./validation.js";

export function kycHandlers(kyc: Kyc): ServiceHandlers<typeof KycService> {
  return {
    async getKycStatus(_request, call) {
      const { level, status, pending } = await kyc.status(call.principal!.subject);
      const nextLevel = level < maxLevel ? level + 1 : 0;
      return {
        kycLevel: level,
        kycStatus: status,
        pendingSubmission: pending,
        nextLevel,
        nextLevelRequirements: levelRequirements[nextLevel] ?? [],
      };
    },

    async submitBasicKyc(request, call) {
      checkBasicIdentity(request.identity);
      return { submission: await kyc.submit(call.principal!, { case: "basic", value: request.identity! }, call) };
    },

    async submitDocumentKyc(request, call) {
      checkIdentityDocument(request.document);
      return { submission: await kyc.submit(call.principal!, { case: "document", value: request.document! }, call) };
    },

    async submitEnhancedKyc(request, call) {
      checkDueDiligence(request.dueDiligence);
      return { submission: await kyc.submit(call.principal!, { case: "enhanced", value: request.dueDiligence! }, call) };
    },

    async listKycSubmissions(request, call) {
      if (KycStatus[request.status] === undefined || request.status === KycStatus.NONE) {
        throw invalidArgument([{ field: "status", description: "PENDING, APPROVED or REJECTED" }]);
      }
      const status = request.status === KycStatus.UNSPECIFIED ? KycStatus.PENDING : request.status;
      const pageSize = pageSizeOf(request.pageSize);
      const after = request.pageToken ? decodePageToken(request.pageToken) : undefined;
      const { page, next } = await kyc.list(call.principal!, status, pageSize, after, call);
      return { submissions: page, nextPageToken: next ? encodePageToken(...next) : "" };
    },

    async reviewKycSubmission(request, call) {
      const reviewer = call.principal!;
      const decision = request.decision;
      switch (decision.case) {
        case "approveSubmissionId": {
          if (!uuidPattern.test(decision.value)) throw invalidArgument([{ field: "approve_submission_id", description: "not a submission id" }]);
          const { submission, level } = await kyc.decide(reviewer, decision.value, { approve: true }, call);
          return { submission, kycLevel: level };
        }
        case "reject": {
          const v = new Violations()
            .add("reject.submission_id", uuidPattern.test(decision.value.submissionId) ? undefined : "not a submission id")
            .add("reject.reason", textProblem(decision.value.reason.trim(), 1, 500));
          v.throwIfAny();
          const { submission, level } = await kyc.decide(reviewer, decision.value.submissionId, { approve: false, reason: decision.value.reason.trim() }, call);
          return { submission, kycLevel: level };
        }
        case "lowerLevel": {
          const v = new Violations()
            .add("lower_level.user_id", uuidPattern.test(decision.value.userId) ? undefined : "not a user id")
            .add("lower_level.kyc_level", decision.value.kycLevel < maxLevel ? undefined : `below ${maxLevel}`)
            .add("lower_level.reason", textProblem(decision.value.reason.trim(), 1, 500));
          v.throwIfAny();
          const level = await kyc.lower(reviewer, decision.value.userId, decision.value.kycLevel, decision.value.reason.trim(), call);
          return { kycLevel: level };
        }
        default:
          throw invalidArgument([{ field: "decision", description: "approve_submission_id, reject or lower_level" }]);
      }
    },
  };
}
