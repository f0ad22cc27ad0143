import { getCountries } from "libphonenumber-js/max";
import { textProblem, Violations } from "../kernel/validation.js";
import {
  DocumentType,
  SourceOfFunds,
  type BasicIdentity,
  type EnhancedDueDiligence,
  type IdentityDocument,
} from "../../gen/portcullis/v1/kyc_service_pb.js";

/** ISO 3166-1 alpha-2 codes, from libphonenumber's maintained metadata. */
const countries = new Set<string>(getCountries());
const minimumAge = 18;

export const levelRequirements: Record<number, string[]> = {
  1: ["legal_name", "birth_date", "nationality", "address"],
  2: ["document_type", "document_number", "issuing_country", "expire_date", "front_image_ref", "back_image_ref", "selfie_image_ref"],
  3: ["proof_of_address_ref", "source_of_funds"],
};

/** The contract holds dates to the YYYY-MM-DD form; this checks the calendar has the day. */
function dateProblem(value: string): string | undefined {
  const date = new Date(`${value}T00:00:00Z`);
  return Number.isNaN(date.getTime()) || date.toISOString().slice(0, 10) !== value ? "not a date" : undefined;
}

function countryProblem(value: string): string | undefined {
  return countries.has(value) ? undefined : "expected an ISO 3166-1 alpha-2 country code, like GB";
}

/**
 * The checks below hold what the contract cannot: trimmed lengths, real dates,
 * countries that exist, a field needed depending on another. They run after
 * the field rules of kyc_service.proto, so they rely on those.
 */
export function checkBasicIdentity(identity: BasicIdentity, now = new Date()): void {
  const v = new Violations();
  v.add("identity.legal_name", textProblem(identity.legalName.trim(), 2, 200));
  const birth = dateProblem(identity.birthDate);
  v.add("identity.birth_date", birth);
  if (!birth) {
    const adult = new Date(`${identity.birthDate}T00:00:00Z`);
    adult.setUTCFullYear(adult.getUTCFullYear() + minimumAge);
    if (adult > now) v.add("identity.birth_date", `must be at least ${minimumAge} years ago`);
    if (identity.birthDate < "1900-01-01") v.add("identity.birth_date", "not a plausible date of birth");
  }
  v.add("identity.nationality", countryProblem(identity.nationality));
  const address = identity.address!;
  address.addressLines.forEach((line, i) => v.add(`identity.address.address_lines[${i}]`, textProblem(line.trim(), 1, 200)));
  v.add("identity.address.locality", textProblem(address.locality.trim(), 1, 100));
  v.add("identity.address.region_code", countryProblem(address.regionCode));
  v.throwIfAny();
}

export function checkIdentityDocument(document: IdentityDocument, now = new Date()): void {
  const v = new Violations();
  v.add("document.issuing_country", countryProblem(document.issuingCountry));
  const expiry = dateProblem(document.expireDate);
  v.add("document.expire_date", expiry ?? (document.expireDate <= now.toISOString().slice(0, 10) ? "the document has expired" : undefined));
  if (document.documentType !== DocumentType.PASSPORT) v.add("document.back_image_ref", textProblem(document.backImageRef, 1, 500));
  v.throwIfAny();
}

export function checkDueDiligence(diligence: EnhancedDueDiligence): void {
  const detailsMin = diligence.sourceOfFunds === SourceOfFunds.OTHER ? 1 : 0;
  new Violations().add("due_diligence.source_of_funds_details", textProblem(diligence.sourceOfFundsDetails.trim(), detailsMin, 1000)).throwIfAny();
}

/** The form a document number is compared in: case, spaces and dashes do not make a new document. */
export function documentKey(document: IdentityDocument): string {
  return `${document.issuingCountry}:${document.documentNumber.toUpperCase().replace(/[\s-]/g, "")}`;
}
