import { parsePhoneNumberFromString } from "libphonenumber-js/max";

const notSmsCapable = new Set(["FIXED_LINE", "PREMIUM_RATE", "TOLL_FREE", "SHARED_COST", "UAN", "VOICEMAIL", "PAGER"]);

export type PhoneCheck = { ok: true; e164: string; country: string } | { ok: false; problem: string };

/**
 * A phone number in international form, checked against libphonenumber's
 * metadata (so "+44 7700 900123" and "+447700900123" are one number) and
 * against the countries we send codes to.
 */
export function checkPhoneNumber(raw: string, allowedCountries: readonly string[]): PhoneCheck {
  if (!raw.trim().startsWith("+")) return { ok: false, problem: "use the international form, starting with + and the country code" };
  const phone = parsePhoneNumberFromString(raw.trim());
  if (!phone || !phone.isValid() || !phone.country) return { ok: false, problem: "not a valid phone number" };
  if (phone.ext) return { ok: false, problem: "leave out the extension: codes go to a mobile number" };
  // Premium-rate and other non-mobile ranges are where SMS pumping earns its money.
  const type = phone.getType();
  if (type !== undefined && notSmsCapable.has(type)) return { ok: false, problem: "not a mobile number: codes are sent by SMS" };
  if (allowedCountries.length > 0 && !allowedCountries.includes(phone.country)) {
    return { ok: false, problem: "codes are not sent to numbers of this country" };
  }
  return { ok: true, e164: phone.number, country: phone.country };
}

/**
 * The E.164 form of anything libphonenumber reads as a number, else the input:
 * rate limits keyed by phone number must count "+44 (0)7700 900123" and
 * "+447700900123" as the one number the handler will use.
 */
export function phoneLimitKey(raw: string): string {
  return parsePhoneNumberFromString(raw.trim())?.number ?? raw;
}

/**
 * "+447700900123", 6 → "+44770090": the country calling code and the first
 * national digits, the block a carrier assigns together (in +1, the 6 digits
 * are the area code and exchange). SMS pumping walks the numbers of a few such
 * blocks, so sends are budgeted per prefix too.
 */
export function phonePrefix(e164: string, nationalDigits: number): string {
  const phone = parsePhoneNumberFromString(e164)!;
  return `+${phone.countryCallingCode}${phone.nationalNumber.slice(0, nationalDigits)}`;
}

/** "+447700900123" → "+44********23": enough to recognise in a log, not to contact. */
export function maskPhone(e164: string): string {
  return e164.slice(0, 3) + "*".repeat(Math.max(0, e164.length - 5)) + e164.slice(-2);
}
