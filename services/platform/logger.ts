import { pino, type Logger } from "pino";

export type { Logger };

/**
 * Fields that may hold a secret, a code or personal data. Callers should not
 * log them at all; redaction is the safety net when one slips into an object.
 */
const redactedPaths = [
  "password", "*.password", "currentPassword", "*.currentPassword", "newPassword", "*.newPassword",
  "code", "*.code", "otp", "*.otp",
  "token", "*.token", "accessToken", "*.accessToken", "refreshToken", "*.refreshToken",
  "authorization", "*.authorization", "headers.authorization", "*.headers.authorization",
  "cookie", "*.cookie", "secret", "*.secret", "privateJwk", "*.privateJwk",
  "phoneNumber", "*.phoneNumber", "email", "*.email",
  "legalName", "*.legalName", "birthDate", "*.birthDate", "documentNumber", "*.documentNumber",
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "portcullis" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactedPaths, censor: "[redacted]" },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ sync: false }),
  );
}
