import { createHmac } from "node:crypto";

/**
 * Receivers authenticate a call by recomputing, with the shared secret,
 * HMAC-SHA256 over `${X-Portcullis-Timestamp}.${raw request body}` and comparing
 * it in constant time with the hex after "sha256=" in X-Portcullis-Signature.
 * The timestamp is in the signed input so a receiver can refuse old calls
 * (a replayed call would re-send someone's code). Without a secret, no headers.
 */
export function signatureHeaders(body: string, secret: string | undefined): Record<string, string> {
  if (!secret) return {};
  const timestamp = String(Math.floor(Date.now() / 1000));
  return {
    "x-portcullis-timestamp": timestamp,
    "x-portcullis-signature": `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`,
  };
}

/**
 * The provider's answer, or only the kind of failure when there was none
 * ("timeout", or a code such as ECONNREFUSED): the error itself can quote the
 * URL, which may hold a token.
 */
export type PostResult = { response: Response } | { unreachable: string };

/** POSTs `body`, giving up after `timeoutMs`. */
export async function postWithin(url: string, init: { headers: Record<string, string>; body: string }, timeoutMs: number): Promise<PostResult> {
  try {
    // A redirect would carry the message (and any credentials) somewhere we were not configured to send them.
    return { response: await fetch(url, { ...init, method: "POST", redirect: "manual", signal: AbortSignal.timeout(timeoutMs) }) };
  } catch (error) {
    if ((error as Error).name === "TimeoutError") return { unreachable: "timeout" };
    return { unreachable: ((error as Error).cause as { code?: string } | undefined)?.code ?? "network" };
  }
}
