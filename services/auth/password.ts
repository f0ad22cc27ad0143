import { hash, verify } from "@node-rs/argon2";
import { dictionary } from "@zxcvbn-ts/language-common";
import { SpanKind } from "@opentelemetry/api";
import { inChildSpan, tracingOn } from "../platform/tracing.js";

/** OWASP's argon2id parameters (m=19 MiB, t=2, p=1). */
const argon2Options = { algorithm: 2 /* Argon2id */, memoryCost: 19_456, timeCost: 2, parallelism: 1 };

/** zxcvbn's list of ~49k common passwords: maintained, and big enough to matter. */
const commonPasswords = new Set((dictionary["passwords-common"] as string[]).map((p) => p.toLowerCase()));

const passwordLength = { min: 8, max: 128 };

/**
 * NIST 800-63B: length and a blocklist, no composition rules. Returns what is
 * wrong, or undefined. Length counts characters, not UTF-16 units.
 */
export function passwordProblem(password: string, email = ""): string | undefined {
  const length = [...password].length;
  if (length < passwordLength.min) return `use at least ${passwordLength.min} characters`;
  if (length > passwordLength.max) return `use at most ${passwordLength.max} characters`;
  const lower = password.toLowerCase();
  if (commonPasswords.has(lower)) return "this password is too common; choose another";
  const local = email.split("@")[0]?.toLowerCase();
  if (local && local.length >= 4 && lower.includes(local)) return "do not use your email address in the password";
  return undefined;
}

export function hashPassword(password: string): Promise<string> {
  return tracingOn ? inChildSpan("argon2.hash", SpanKind.INTERNAL, {}, () => hash(password, argon2Options)) : hash(password, argon2Options);
}

/** A hash of a random password: checked for unknown emails so they cost what a wrong password costs. */
const decoyHash = hashPassword(crypto.randomUUID());

export async function verifyPassword(passwordHash: string | undefined, password: string): Promise<boolean> {
  try {
    const against = passwordHash ?? (await decoyHash);
    const ok = await (tracingOn ? inChildSpan("argon2.verify", SpanKind.INTERNAL, {}, () => verify(against, password)) : verify(against, password));
    return ok && passwordHash !== undefined;
  } catch {
    return false;
  }
}
