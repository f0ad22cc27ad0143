import { Code, ConnectError } from "@connectrpc/connect";
import {
  CaptchaRequiredError,
  InvalidArgumentError,
  KycLevelRequiredError,
  PortcullisError,
  RateLimitedError,
  StepUpRequiredError,
} from "../client/index.js";

/** Reasons whose server message is written for developers: these say it for people. */
const reasons: Record<string, string> = {
  EMAIL_NOT_VERIFIED: "Your email address is not verified yet. We have mailed you a new link: open it, then sign in.",
  INVALID_CREDENTIALS: "That did not match. Check what you typed and try again.",
  MFA_CHALLENGE_INVALID: "That sign-in has expired or had too many tries. Start again.",
  MFA_NOT_ENABLED: "This needs an authenticator app, and your account has none set up.",
  FRESH_SIGN_IN_REQUIRED: "Sign in again first, then retry.",
};

/** An error of the client library, or of the browser, in plain words. */
export function describeError(error: unknown): string {
  if (error instanceof RateLimitedError) return `Too many attempts; try again in ${Math.max(1, Math.ceil(error.retryAfterMs / 1000))} s`;
  if (error instanceof InvalidArgumentError && error.violations.length > 0) return error.violations.map((v) => `${fieldName(v.field)}: ${v.description}`).join("; ");
  if (error instanceof KycLevelRequiredError) return `This needs identity verification at level ${error.requiredLevel}; you are at level ${error.currentLevel}.`;
  if (error instanceof StepUpRequiredError) return "This needs a recent second factor. Try again and confirm it is you.";
  if (error instanceof CaptchaRequiredError) return "The server asks for a captcha, which this example app cannot show. Try again later.";
  if (error instanceof PortcullisError && error.reason && reasons[error.reason]) return reasons[error.reason]!;
  if (error instanceof ConnectError) {
    if (error.code === Code.Unavailable || error.code === Code.Unknown) return "The server cannot be reached. Check your connection and try again.";
    return error.rawMessage;
  }
  // Browsers tie passkeys to a domain (never an IP address) that the server names: a page opened at another address,
  // say http://127.0.0.1:8080 for the default http://localhost:8080, cannot use them. @simplewebauthn/browser's codes.
  const code = error instanceof Error && "code" in error ? error.code : undefined;
  if (code === "ERROR_INVALID_DOMAIN" || code === "ERROR_INVALID_RP_ID") {
    return "Passkeys work only at the addresses this server is set up for (WEBAUTHN_ORIGINS, or APP_URL: http://localhost:8080 by default): open this page there.";
  }
  // A cancelled or timed-out prompt, and an authenticator that already holds this account's passkey: the browser's
  // DOMException names, which @simplewebauthn/browser's WebAuthnError keeps.
  if (error instanceof Error && error.name === "NotAllowedError") return "The passkey prompt was cancelled or timed out.";
  if (error instanceof Error && error.name === "InvalidStateError") return "This authenticator already holds a passkey for this account.";
  if (error instanceof Error && error.message) return error.message;
  return "Something went wrong. Try again.";
}

/** Fields whose name in the contract is not what the page calls them. */
const fieldLabels: Record<string, string> = { totp_code: "Code", token: "Link" };

/** "user.display_name" → "Display name": the last part of the request field's path, as words. */
function fieldName(path: string): string {
  const last = (path.split(".").at(-1) ?? path).replace(/\[\d+\]$/, "");
  const words = fieldLabels[last] ?? last.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
