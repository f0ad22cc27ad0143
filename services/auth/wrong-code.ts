import { invalidArgument } from "../kernel/errors.js";

/**
 * The one answer for a wrong, used, expired or never-sent code or link,
 * whatever it was for (a sign-in, an address, a reset): none of them tells
 * anything about the number, the address or the account.
 */
export const wrongCode = (field: "code" | "token" = "code") =>
  invalidArgument([{ field, description: "the code is wrong or has expired; request a new one" }]);

/** The audit detail of a wrong code: which attempt it was, and whether it was the last. */
export const wrongCodeDetail = (tried: { attempts: number; max_attempts: number }) => ({
  reason: "wrong_code",
  attempt: tried.attempts,
  closed: tried.attempts >= tried.max_attempts,
});
