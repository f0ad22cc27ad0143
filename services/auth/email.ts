/** Emails are compared in lower case with surrounding space removed. */
export function normalizeEmail(raw: string): string {
  return raw.trim().toLowerCase();
}

export function emailProblem(email: string): string | undefined {
  if (email.length === 0) return "required";
  if (email.length > 254) return "at most 254 characters";
  if (!/^[^\s\p{Cc}@]+@[^\s\p{Cc}@]+\.[^\s\p{Cc}@]+$/u.test(email)) return "not an email address";
  return undefined;
}

/** "alice@example.com" → "a***@example.com": enough for its owner to recognise it, in a notice to someone else. */
export function maskEmail(email: string): string {
  const at = email.lastIndexOf("@");
  return at <= 0 ? "***" : `${email[0]}***${email.slice(at)}`;
}
