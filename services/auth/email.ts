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
