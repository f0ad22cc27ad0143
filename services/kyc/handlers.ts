import type { ServiceHandlers } from "../kernel/call.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "../kernel/pagination.js";
import { textProblem, Violations } from "../kernel/validation.js";
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
      const identity = request.identity!;
      checkBasicIdentity(identity);
      return { submission: await kyc.submit(call.principal!, { case: "basic", value: identity }, call) };
    },

    async submitDocumentKyc(request, call) {
      const document = request.document!;
      checkIdentityDocument(document);
      return { submission: await kyc.submit(call.principal!, { case: "document", value: document }, call) };
    },

    async submitEnhancedKyc(request, call) {
      const diligence = request.dueDiligence!;
      checkDueDiligence(diligence);
      return { submission: await kyc.submit(call.principal!, { case: "enhanced", value: diligence }, call) };
    },

    async listKycSubmissions(request, call) {
      const status = request.status === KycStatus.UNSPECIFIED ? KycStatus.PENDING : request.status;
      const pageSize = pageSizeOf(request.pageSize);
      const after = request.pageToken ? decodePageToken(request.pageToken) : undefined;
      const { page, next } = await kyc.list(call.principal!, status, pageSize, after, call);
      return { submissions: page, nextPageToken: next ? encodePageToken(...next) : "" };
    },

    async reviewKycSubmission(request, call) {
      const reviewer = call.principal!;
      // The contract requires a decision (oneof required).
      const decision = request.decision as Exclude<typeof request.decision, { case: undefined }>;
      switch (decision.case) {
        case "approveSubmissionId": {
          const { submission, level } = await kyc.decide(reviewer, decision.value, { approve: true }, call);
          return { submission, kycLevel: level };
        }
        case "reject": {
          new Violations().add("reject.reason", textProblem(decision.value.reason.trim(), 1, 500)).throwIfAny();
          const { submission, level } = await kyc.decide(reviewer, decision.value.submissionId, { approve: false, reason: decision.value.reason.trim() }, call);
          return { submission, kycLevel: level };
        }
        case "lowerLevel": {
          new Violations().add("lower_level.reason", textProblem(decision.value.reason.trim(), 1, 500)).throwIfAny();
          const level = await kyc.lower(reviewer, decision.value.userId, decision.value.kycLevel, decision.value.reason.trim(), call);
          return { kycLevel: level };
        }
      }
    },
  };
}
