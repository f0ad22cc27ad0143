import type { ServiceHandlers } from "../policy/call.js";
import { unimplemented } from "../platform/errors.js";
import { KycService } from "../../gen/portcullis/v1/kyc_service_pb.js";

const kyc = "KYC flows come with issue #5";

export function kycHandlers(): ServiceHandlers<typeof KycService> {
  return {
    getKycStatus: async () => { throw unimplemented("GetKycStatus", kyc); },
    submitBasicKyc: async () => { throw unimplemented("SubmitBasicKyc", kyc); },
    submitDocumentKyc: async () => { throw unimplemented("SubmitDocumentKyc", kyc); },
    submitEnhancedKyc: async () => { throw unimplemented("SubmitEnhancedKyc", kyc); },
    listKycSubmissions: async () => { throw unimplemented("ListKycSubmissions", kyc); },
    reviewKycSubmission: async () => { throw unimplemented("ReviewKycSubmission", kyc); },
  };
}
