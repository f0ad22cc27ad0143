import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { RuntimeError } from "@bufbuild/protovalidate";
import { expect } from "chai";
import { createRequestValidator } from "../../services/policy/request-validation.js";
import {
  AuthService,
  ChangePasswordRequestSchema,
  GetProfileRequestSchema,
  LoginRequestSchema,
  RefreshTokenRequestSchema,
  RegisterRequestSchema,
  SendOtpRequestSchema,
  UpdateProfileRequestSchema,
  VerifyOtpRequestSchema,
} from "../../gen/portcullis/v1/auth_service_pb.js";
import { DeviceType, KycStatus } from "../../gen/portcullis/v1/common_pb.js";
import {
  DocumentType,
  KycService,
  ListKycSubmissionsRequestSchema,
  ReviewKycSubmissionRequestSchema,
  SourceOfFunds,
  SubmitBasicKycRequestSchema,
  SubmitDocumentKycRequestSchema,
  SubmitEnhancedKycRequestSchema,
} from "../../gen/portcullis/v1/kyc_service_pb.js";
import { ListSessionsRequestSchema, RevokeSessionRequestSchema, SessionService } from "../../gen/portcullis/v1/session_service_pb.js";

const requestTypes = [AuthService, SessionService, KycService].flatMap((service) => service.methods.map((method) => method.input));
const validate = createRequestValidator(requestTypes);

/** The fields named, in order: what our INVALID_ARGUMENT answers carry and the tests of the services assert. */
function fieldsOf<D extends DescMessage>(schema: D, init: MessageInitShape<D>): string[] {
  return validate(schema, create(schema, init)).map((v) => v.field);
}

const device = { deviceId: "device-1", deviceType: DeviceType.IOS, deviceName: "Ana's iPhone" };
const uuid = "5f0c6a2e-3b1d-4c8e-9a7f-2d4b6e8c0a13";
const emoji = "\u{1F600}"; // one character, two UTF-16 units
const address = { addressLines: ["1 High Street", "Flat 2"], locality: "London", postalCode: "SW1A 1AA", regionCode: "GB" };
const identity = { legalName: "Ana Lima", birthDate: "1990-04-01", nationality: "PT", address };
const document = {
  documentType: DocumentType.PASSPORT,
  documentNumber: "P-1234567",
  issuingCountry: "PT",
  expireDate: "2031-01-01",
  frontImageRef: "uploads/front.jpg",
  selfieImageRef: "uploads/selfie.jpg",
};

describe("request validation from the contract's buf.validate rules", () => {
  it("plans every request type of the three services without a compilation error", () => {
    expect(() => createRequestValidator(requestTypes)).not.to.throw();
  });

  describe("valid requests", () => {
    it("gives [] for a message with no rules", () => {
      expect(validate(GetProfileRequestSchema, create(GetProfileRequestSchema))).to.deep.equal([]);
    });

    it("gives [] for valid requests of each service", () => {
      expect(fieldsOf(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: "012345", device })).to.deep.equal([]);
      expect(fieldsOf(RegisterRequestSchema, { email: "ana@example.com", password: "a passphrase", displayName: "Ana", device })).to.deep.equal([]);
      expect(fieldsOf(UpdateProfileRequestSchema, { user: { displayName: "Ana" }, updateMask: { paths: ["display_name"] } })).to.deep.equal([]);
      expect(fieldsOf(ListSessionsRequestSchema, {})).to.deep.equal([]);
      expect(fieldsOf(RevokeSessionRequestSchema, { sessionId: uuid })).to.deep.equal([]);
      expect(fieldsOf(SubmitBasicKycRequestSchema, { identity })).to.deep.equal([]);
      expect(fieldsOf(SubmitDocumentKycRequestSchema, { document })).to.deep.equal([]);
      expect(fieldsOf(SubmitEnhancedKycRequestSchema, { dueDiligence: { proofOfAddressRef: "uploads/bill.pdf", sourceOfFunds: SourceOfFunds.EMPLOYMENT } })).to.deep.equal([]);
      expect(fieldsOf(ReviewKycSubmissionRequestSchema, { decision: { case: "reject", value: { submissionId: uuid, reason: "the photo is blurred" } } })).to.deep.equal([]);
    });

    it("leaves to the handlers what needs more than the field: a real date, a real country, the page token", () => {
      expect(fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, birthDate: "2020-02-30", nationality: "XX" } })).to.deep.equal([]);
      expect(fieldsOf(ListKycSubmissionsRequestSchema, { pageToken: "bm9wZQ" })).to.deep.equal([]);
      expect(fieldsOf(RegisterRequestSchema, { email: "not an address", password: "password123", device })).to.deep.equal([]);
    });
  });

  describe("field paths", () => {
    it("name the field by its proto name, nested fields joined with dots", () => {
      expect(fieldsOf(RegisterRequestSchema, { email: "ana@example.com", password: "a passphrase", displayName: "Ana\u0000", device })).to.deep.equal(["display_name"]);
      expect(fieldsOf(RegisterRequestSchema, { email: "ana@example.com", password: "a passphrase", device: { ...device, deviceName: "Phone\u0000" } })).to.deep.equal([
        "device.device_name",
      ]);
      expect(fieldsOf(UpdateProfileRequestSchema, { user: { displayName: "Ana\u0000" }, updateMask: { paths: ["display_name"] } })).to.deep.equal(["user.display_name"]);
      expect(fieldsOf(ListSessionsRequestSchema, { pageSize: 101 })).to.deep.equal(["page_size"]);
    });

    it("index list items in brackets, after the list's own violations", () => {
      const lines = ["", "Flat 2", "\u0000", "x", "y"];
      expect(fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, address: { ...address, addressLines: lines } } })).to.deep.equal([
        "identity.address.address_lines",
        "identity.address.address_lines[0]",
        "identity.address.address_lines[2]",
      ]);
    });

    it("name a oneof member by the field, and a oneof left unset by the oneof", () => {
      expect(fieldsOf(ReviewKycSubmissionRequestSchema, { decision: { case: "approveSubmissionId", value: "42" } })).to.deep.equal(["approve_submission_id"]);
      expect(fieldsOf(ReviewKycSubmissionRequestSchema, { decision: { case: "reject", value: { submissionId: "42", reason: "" } } })).to.deep.equal([
        "reject.submission_id",
        "reject.reason",
      ]);
      expect(fieldsOf(ReviewKycSubmissionRequestSchema, { decision: { case: "lowerLevel", value: { userId: uuid, kycLevel: 3, reason: "fraud" } } })).to.deep.equal([
        "lower_level.kyc_level",
      ]);
      expect(fieldsOf(ReviewKycSubmissionRequestSchema, { decision: { case: "lowerLevel", value: { userId: "42", kycLevel: 2, reason: "fraud" } } })).to.deep.equal([
        "lower_level.user_id",
      ]);
      expect(fieldsOf(ReviewKycSubmissionRequestSchema, {})).to.deep.equal(["decision"]);
    });

    it("describe each violation in protovalidate's words", () => {
      const violations = validate(RegisterRequestSchema, create(RegisterRequestSchema, { email: "ana@example.com", password: "a passphrase", displayName: "a".repeat(101), device }));
      expect(violations).to.deep.equal([{ field: "display_name", description: "must be at most 100 characters" }]);
      const missing = validate(VerifyOtpRequestSchema, create(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: "012345" }));
      expect(missing).to.deep.equal([{ field: "device", description: "value is required" }]);
    });
  });

  describe("rule families", () => {
    it("uuid: any case, with dashes, and nothing else", () => {
      expect(fieldsOf(RevokeSessionRequestSchema, { sessionId: uuid.toUpperCase() })).to.deep.equal([]);
      for (const bad of ["", "not-a-uuid", uuid.replaceAll("-", ""), `${uuid} `, `{${uuid}}`]) {
        expect(fieldsOf(RevokeSessionRequestSchema, { sessionId: bad }), bad).to.deep.equal(["session_id"]);
      }
    });

    it("free-text pattern: refuses control characters but tab, CR and LF", () => {
      const named = (deviceName: string) => fieldsOf(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: "012345", device: { ...device, deviceName } });
      for (const ok of ["", "Ana's\tiPhone", "line\r\nbreak", "Zoë's 📱", "\u0085\u200b"]) expect(named(ok), JSON.stringify(ok)).to.deep.equal([]);
      for (const bad of ["\u0000", "a\u0001", "\u0008", "\u000b", "\u000c", "\u000e", "\u001f", "del\u007f"]) {
        expect(named(bad), JSON.stringify(bad)).to.deep.equal(["device.device_name"]);
      }
    });

    it("free-text pattern: on every free-text field the server does not trim", () => {
      const bad = "a\u000bb";
      expect(fieldsOf(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: "012345", device: { ...device, deviceId: bad } })).to.deep.equal(["device.device_id"]);
      const inAddress = { ...address, administrativeArea: bad, postalCode: bad };
      expect(fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, address: inAddress } })).to.deep.equal([
        "identity.address.administrative_area",
        "identity.address.postal_code",
      ]);
      expect(fieldsOf(SubmitDocumentKycRequestSchema, { document: { ...document, frontImageRef: bad, selfieImageRef: bad } })).to.deep.equal([
        "document.front_image_ref",
        "document.selfie_image_ref",
      ]);
      expect(fieldsOf(SubmitEnhancedKycRequestSchema, { dueDiligence: { proofOfAddressRef: bad, sourceOfFunds: SourceOfFunds.EMPLOYMENT } })).to.deep.equal([
        "due_diligence.proof_of_address_ref",
      ]);
    });

    it("free-text pattern on fields the server trims: VT and FF pass (trimming removes them at the ends), NUL does not", () => {
      const legalName = (name: string) => fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, legalName: name } });
      expect(legalName("Ana Lima\u000b")).to.deep.equal([]);
      expect(legalName("\u000cAna Lima")).to.deep.equal([]);
      expect(legalName("Ana\u0000Lima")).to.deep.equal(["identity.legal_name"]);
      expect(legalName("Ana\u001bLima")).to.deep.equal(["identity.legal_name"]);
    });

    it("other patterns: 6 ASCII digits, YYYY-MM-DD, two capital letters, a document number", () => {
      const code = (value: string) => fieldsOf(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: value, device });
      for (const bad of ["", "12345", "1234567", "12345a", " 123456", "123456\n", "١٢٣٤٥٦"]) expect(code(bad), bad).to.deep.equal(["code"]);
      const basic = (init: Partial<typeof identity>) => fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, ...init } });
      expect(basic({ birthDate: "1990-4-1" })).to.deep.equal(["identity.birth_date"]);
      expect(basic({ birthDate: "1990-04-01T00:00:00Z" })).to.deep.equal(["identity.birth_date"]);
      expect(basic({ birthDate: "17/05/1990" })).to.deep.equal(["identity.birth_date"]);
      expect(fieldsOf(SubmitDocumentKycRequestSchema, { document: { ...document, expireDate: "2031-1-1" } })).to.deep.equal(["document.expire_date"]);
      expect(basic({ nationality: "pt" })).to.deep.equal(["identity.nationality"]);
      expect(basic({ nationality: "PRT" })).to.deep.equal(["identity.nationality"]);
      const number = (documentNumber: string) => fieldsOf(SubmitDocumentKycRequestSchema, { document: { ...document, documentNumber } });
      for (const ok of ["ab 12-3", "AB1", "A".repeat(50)]) expect(number(ok), ok).to.deep.equal([]);
      for (const bad of ["AB", "-AB123", " AB12", "AB_123", "AB/12", "A".repeat(51)]) expect(number(bad), bad).to.deep.equal(["document.document_number"]);
    });

    it("lengths count characters (code points): an emoji is one", () => {
      const register = (password: string, displayName = "") =>
        fieldsOf(RegisterRequestSchema, { email: "ana@example.com", password, displayName, device });
      expect(register(emoji.repeat(8)), "8 characters in 16 UTF-16 units").to.deep.equal([]);
      expect(register(emoji.repeat(7))).to.deep.equal(["password"]);
      expect(register("a".repeat(128))).to.deep.equal([]);
      expect(register(emoji.repeat(129))).to.deep.equal(["password"]);
      expect(register("a passphrase", emoji.repeat(100))).to.deep.equal([]);
      expect(register("a passphrase", emoji.repeat(101))).to.deep.equal(["display_name"]);
      const deviceId = (id: string) => fieldsOf(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: "012345", device: { ...device, deviceId: id } });
      expect(deviceId(emoji.repeat(128))).to.deep.equal([]);
      expect(deviceId(emoji.repeat(129))).to.deep.equal(["device.device_id"]);
      expect(deviceId("")).to.deep.equal(["device.device_id"]);
      const profile = (displayName: string) => fieldsOf(UpdateProfileRequestSchema, { user: { displayName }, updateMask: { paths: ["display_name"] } });
      expect(profile("a".repeat(100))).to.deep.equal([]);
      expect(profile("a".repeat(101))).to.deep.equal(["user.display_name"]);
    });

    it("lengths of optional address fields and of upload references", () => {
      const inAddress = (changes: Partial<typeof address> & { administrativeArea?: string }) =>
        fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, address: { ...address, ...changes } } });
      expect(inAddress({ administrativeArea: "a".repeat(100), postalCode: "1".repeat(20) })).to.deep.equal([]);
      expect(inAddress({ administrativeArea: "a".repeat(101), postalCode: "1".repeat(21) })).to.deep.equal([
        "identity.address.administrative_area",
        "identity.address.postal_code",
      ]);
      const refs = (ref: string) => fieldsOf(SubmitDocumentKycRequestSchema, { document: { ...document, frontImageRef: ref, selfieImageRef: ref } });
      expect(refs("r".repeat(500))).to.deep.equal([]);
      for (const bad of ["", "r".repeat(501)]) expect(refs(bad), `${bad.length} characters`).to.deep.equal(["document.front_image_ref", "document.selfie_image_ref"]);
      const proof = (proofOfAddressRef: string) => fieldsOf(SubmitEnhancedKycRequestSchema, { dueDiligence: { proofOfAddressRef, sourceOfFunds: SourceOfFunds.EMPLOYMENT } });
      expect(proof("r".repeat(500))).to.deep.equal([]);
      for (const bad of ["", "r".repeat(501)]) expect(proof(bad), `${bad.length} characters`).to.deep.equal(["due_diligence.proof_of_address_ref"]);
    });

    it("enums: defined values only, and UNSPECIFIED refused only where the server refuses it today", () => {
      const deviceType = (type: number) => fieldsOf(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: "012345", device: { ...device, deviceType: type } });
      expect(deviceType(DeviceType.UNSPECIFIED), "a sign-in need not say the kind of device").to.deep.equal([]);
      expect(deviceType(99)).to.deep.equal(["device.device_type"]);
      const documentType = (type: number) => fieldsOf(SubmitDocumentKycRequestSchema, { document: { ...document, documentType: type } });
      expect(documentType(DocumentType.UNSPECIFIED)).to.deep.equal(["document.document_type"]);
      expect(documentType(99)).to.deep.equal(["document.document_type"]);
      const sourceOfFunds = (source: number) => fieldsOf(SubmitEnhancedKycRequestSchema, { dueDiligence: { proofOfAddressRef: "uploads/bill.pdf", sourceOfFunds: source } });
      expect(sourceOfFunds(SourceOfFunds.UNSPECIFIED)).to.deep.equal(["due_diligence.source_of_funds"]);
      expect(sourceOfFunds(-1)).to.deep.equal(["due_diligence.source_of_funds"]);
      const status = (value: number) => fieldsOf(ListKycSubmissionsRequestSchema, { status: value });
      expect(status(KycStatus.UNSPECIFIED), "unspecified means pending").to.deep.equal([]);
      expect(status(KycStatus.REJECTED)).to.deep.equal([]);
      expect(status(KycStatus.NONE)).to.deep.equal(["status"]);
      expect(status(7)).to.deep.equal(["status"]);
    });

    it("repeated: 1 to 3 address lines", () => {
      const lines = (addressLines: string[]) => fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, address: { ...address, addressLines } } });
      expect(lines([])).to.deep.equal(["identity.address.address_lines"]);
      expect(lines(["a"])).to.deep.equal([]);
      expect(lines(["a", "b", "c"])).to.deep.equal([]);
      expect(lines(["a", "b", "c", "d"])).to.deep.equal(["identity.address.address_lines"]);
    });

    it("required message fields, at any depth", () => {
      expect(fieldsOf(VerifyOtpRequestSchema, { phoneNumber: "+447700900123", code: "012345" })).to.deep.equal(["device"]);
      expect(fieldsOf(RegisterRequestSchema, { email: "ana@example.com", password: "a passphrase" }), "Register no longer signs in").to.deep.equal([]);
      expect(fieldsOf(LoginRequestSchema, { email: "ana@example.com", password: "a passphrase" })).to.deep.equal(["device"]);
      expect(fieldsOf(SubmitBasicKycRequestSchema, {})).to.deep.equal(["identity"]);
      expect(fieldsOf(SubmitDocumentKycRequestSchema, {})).to.deep.equal(["document"]);
      expect(fieldsOf(SubmitEnhancedKycRequestSchema, {})).to.deep.equal(["due_diligence"]);
      expect(fieldsOf(SubmitBasicKycRequestSchema, { identity: { ...identity, address: undefined } })).to.deep.equal(["identity.address"]);
      expect(fieldsOf(UpdateProfileRequestSchema, { user: { displayName: "Ana" } })).to.deep.equal(["update_mask"]);
    });

    it("required strings: not empty", () => {
      expect(fieldsOf(SendOtpRequestSchema, {})).to.deep.equal(["phone_number"]);
      expect(fieldsOf(VerifyOtpRequestSchema, { code: "012345", device })).to.deep.equal(["phone_number"]);
      expect(fieldsOf(LoginRequestSchema, { email: "ana@example.com", device })).to.deep.equal(["password"]);
      expect(fieldsOf(LoginRequestSchema, { email: "ana@example.com", password: " ", device }), "a password is not trimmed").to.deep.equal([]);
      expect(fieldsOf(ChangePasswordRequestSchema, { newPassword: "a new passphrase" })).to.deep.equal(["current_password"]);
      expect(fieldsOf(RefreshTokenRequestSchema, {})).to.deep.equal(["refresh_token"]);
    });

    it("numbers: page_size from 0 to 100", () => {
      for (const ok of [0, 1, 100]) expect(fieldsOf(ListKycSubmissionsRequestSchema, { pageSize: ok })).to.deep.equal([]);
      for (const bad of [-1, 101]) expect(fieldsOf(ListKycSubmissionsRequestSchema, { pageSize: bad })).to.deep.equal(["page_size"]);
      for (const bad of [-1, 101]) expect(fieldsOf(ListSessionsRequestSchema, { pageSize: bad })).to.deep.equal(["page_size"]);
    });

    it("field masks: only display_name may be updated", () => {
      const mask = (paths: string[]) => fieldsOf(UpdateProfileRequestSchema, { user: { displayName: "Ana" }, updateMask: { paths } });
      expect(mask(["display_name", "email"])).to.deep.equal(["update_mask"]);
      expect(mask(["kyc_level"])).to.deep.equal(["update_mask"]);
    });
  });

  it("throws, rather than answering, when the message is not of the type given", () => {
    const message = create(VerifyOtpRequestSchema);
    expect(() => validate(GetProfileRequestSchema, message)).to.throw(RuntimeError);
  });
});
