import { create, type DescMessage, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import { expect } from "chai";
import {
  BasicIdentitySchema,
  DocumentType,
  EnhancedDueDiligenceSchema,
  IdentityDocumentSchema,
  SourceOfFunds,
} from "../../gen/portcullis/v1/kyc_service_pb.js";
import { checkBasicIdentity, checkDueDiligence, checkIdentityDocument, documentKey } from "../../services/kyc/validation.js";
import { violationsOf } from "../support/violations.js";

/** Every date rule is checked against this moment, never the clock. */
const now = new Date("2026-06-15T12:00:00Z");
const notACountry = "expected an ISO 3166-1 alpha-2 country code, like GB";

/** A message's fields as plain values: what a test changes in a valid message. */
type Fields<D extends DescMessage> = Exclude<MessageInitShape<D>, Message>;

const identity = (changes: Fields<typeof BasicIdentitySchema> = {}) =>
  create(BasicIdentitySchema, {
    legalName: "Ana Maria Pereira",
    birthDate: "1990-05-17",
    nationality: "PT",
    address: { addressLines: ["1 Rua Augusta"], locality: "Lisboa", postalCode: "1100-053", regionCode: "PT" },
    ...changes,
  });
const passport = (changes: Fields<typeof IdentityDocumentSchema> = {}) =>
  create(IdentityDocumentSchema, {
    documentType: DocumentType.PASSPORT,
    documentNumber: "P1234567",
    issuingCountry: "PT",
    expireDate: "2031-01-01",
    frontImageRef: "uploads/front.jpg",
    selfieImageRef: "uploads/selfie.jpg",
    ...changes,
  });
const diligence = (changes: Fields<typeof EnhancedDueDiligenceSchema> = {}) =>
  create(EnhancedDueDiligenceSchema, { proofOfAddressRef: "uploads/bill.pdf", sourceOfFunds: SourceOfFunds.EMPLOYMENT, ...changes });

describe("KYC submission rules", () => {
  describe("level 1: checkBasicIdentity", () => {
    it("accepts a complete identity", () => {
      expect(() => checkBasicIdentity(identity(), now)).not.to.throw();
      expect(() => checkBasicIdentity(identity({ legalName: "李明" }), now), "a two-character name in any script").not.to.throw();
    });

    it("names every field at fault in one answer, by its proto path", () => {
      const everythingWrong = identity({
        legalName: " A ",
        birthDate: "2008-06-16",
        nationality: "XX",
        address: { addressLines: ["  "], locality: "", regionCode: "pt" },
      });
      expect(violationsOf(() => checkBasicIdentity(everythingWrong, now))).to.deep.equal({
        "identity.legal_name": "at least 2 characters",
        "identity.birth_date": "must be at least 18 years ago",
        "identity.nationality": notACountry,
        "identity.address.address_lines[0]": "required",
        "identity.address.locality": "required",
        "identity.address.region_code": notACountry,
      });
    });

    it("trims the legal name before counting it, and refuses control characters in it", () => {
      expect(violationsOf(() => checkBasicIdentity(identity({ legalName: "  A  " }), now))).to.deep.equal({ "identity.legal_name": "at least 2 characters" });
      expect(violationsOf(() => checkBasicIdentity(identity({ legalName: "Ana\u0000" }), now))).to.deep.equal({ "identity.legal_name": "contains a control character" });
    });

    it("wants a real YYYY-MM-DD birth date", () => {
      expect(violationsOf(() => checkBasicIdentity(identity({ birthDate: "1990-02-30" }), now))).to.deep.equal({ "identity.birth_date": "not a date" });
    });

    it("wants an adult: 18 on the day, counted in UTC", () => {
      expect(() => checkBasicIdentity(identity({ birthDate: "2008-06-15" }), now), "18 today").not.to.throw();
      expect(violationsOf(() => checkBasicIdentity(identity({ birthDate: "2008-06-16" }), now))).to.deep.equal({ "identity.birth_date": "must be at least 18 years ago" });
    });

    it("refuses a birth date before 1900", () => {
      expect(() => checkBasicIdentity(identity({ birthDate: "1900-01-01" }), now)).not.to.throw();
      expect(violationsOf(() => checkBasicIdentity(identity({ birthDate: "1899-12-31" }), now))).to.deep.equal({ "identity.birth_date": "not a plausible date of birth" });
    });

    it("checks each address field, naming an address line by its index", () => {
      const tooLong = { addressLines: ["a", "b".repeat(201)], locality: "x".repeat(101), regionCode: "GB" };
      expect(violationsOf(() => checkBasicIdentity(identity({ address: tooLong }), now))).to.deep.equal({
        "identity.address.address_lines[1]": "at most 200 characters",
        "identity.address.locality": "at most 100 characters",
      });
      const blankLine = { addressLines: ["1 Rua Augusta", "  "], locality: "Lisboa", regionCode: "PT" };
      expect(violationsOf(() => checkBasicIdentity(identity({ address: blankLine }), now))).to.deep.equal({ "identity.address.address_lines[1]": "required" });
    });
  });

  describe("level 2: checkIdentityDocument", () => {
    it("accepts a valid passport without a back image", () => {
      expect(() => checkIdentityDocument(passport(), now)).not.to.throw();
    });

    it("names every field at fault in one answer, by its proto path", () => {
      const everythingWrong = passport({ documentType: DocumentType.NATIONAL_ID, issuingCountry: "ZZ", expireDate: "2026-06-15" });
      expect(violationsOf(() => checkIdentityDocument(everythingWrong, now))).to.deep.equal({
        "document.issuing_country": notACountry,
        "document.expire_date": "the document has expired",
        "document.back_image_ref": "required",
      });
    });

    it("wants a back image for every document but a passport", () => {
      for (const documentType of [DocumentType.NATIONAL_ID, DocumentType.DRIVING_LICENCE, DocumentType.RESIDENCE_PERMIT]) {
        expect(violationsOf(() => checkIdentityDocument(passport({ documentType }), now)), DocumentType[documentType]).to.deep.equal({ "document.back_image_ref": "required" });
        expect(() => checkIdentityDocument(passport({ documentType, backImageRef: "uploads/back.jpg" }), now)).not.to.throw();
      }
    });

    it("refuses a document that expires today or earlier, and an expiry date that is not a date", () => {
      expect(() => checkIdentityDocument(passport({ expireDate: "2026-06-16" }), now)).not.to.throw();
      expect(violationsOf(() => checkIdentityDocument(passport({ expireDate: "2026-06-15" }), now))).to.deep.equal({ "document.expire_date": "the document has expired" });
      expect(violationsOf(() => checkIdentityDocument(passport({ expireDate: "2031-13-01" }), now))).to.deep.equal({ "document.expire_date": "not a date" });
    });
  });

  describe("level 3: checkDueDiligence", () => {
    it("accepts proof of address and a source of funds, with details optional", () => {
      expect(() => checkDueDiligence(diligence())).not.to.throw();
    });

    it("wants details, not just space, when the source of funds is OTHER", () => {
      expect(violationsOf(() => checkDueDiligence(diligence({ sourceOfFunds: SourceOfFunds.OTHER, sourceOfFundsDetails: "  " })))).to.deep.equal({
        "due_diligence.source_of_funds_details": "required",
      });
      expect(() => checkDueDiligence(diligence({ sourceOfFunds: SourceOfFunds.OTHER, sourceOfFundsDetails: "Lottery win" }))).not.to.throw();
    });

    it("caps the details at 1000 characters", () => {
      expect(violationsOf(() => checkDueDiligence(diligence({ sourceOfFundsDetails: "x".repeat(1001) })))).to.deep.equal({
        "due_diligence.source_of_funds_details": "at most 1000 characters",
      });
    });
  });

  describe("documentKey: when two submissions are the same document", () => {
    it("ignores case, spaces and dashes in the number", () => {
      const key = documentKey(passport({ documentNumber: "AB1234" }));
      expect(key).to.equal("PT:AB1234");
      for (const documentNumber of ["ab1234", "AB 12-34", "ab\t12\n34"]) expect(documentKey(passport({ documentNumber })), JSON.stringify(documentNumber)).to.equal(key);
    });

    it("keeps documents of different issuing countries apart", () => {
      expect(documentKey(passport({ issuingCountry: "GB" }))).not.to.equal(documentKey(passport({ issuingCountry: "PT" })));
    });
  });
});
