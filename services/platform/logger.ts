import pg from "pg";
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
  "totpCode", "*.totpCode", "recoveryCode", "*.recoveryCode", "recoveryCodes", "*.recoveryCodes",
  "otpauthUri", "*.otpauthUri", "qrCodeSvg", "*.qrCodeSvg", "challengeId", "*.challengeId",
  "secretSealed", "*.secretSealed", "secret_sealed", "*.secret_sealed", "clientSecret", "*.clientSecret",
  "captchaToken", "*.captchaToken", 'headers["x-captcha-token"]', '*.headers["x-captcha-token"]',
  "legalName", "*.legalName", "birthDate", "*.birthDate", "documentNumber", "*.documentNumber",
];

/**
 * A Postgres error's `detail` and `where` quote the values at fault ("Key
 * (email)=(…) already exists"), and so does a data exception's message after
 * its colon: log what identifies the error, and where it came from, not them.
 */
function errorSerializer(error: unknown) {
  if (error instanceof pg.DatabaseError) {
    const { code, constraint, table, routine } = error;
    const message = code?.startsWith("22") ? error.message.split(":")[0] : error.message;
    const stack = error.stack?.split("\n").slice(1).join("\n");
    return { type: "DatabaseError", sqlstate: code, message, constraint, table, routine, stack };
  }
  return pino.stdSerializers.err(error as Error);
}

const common = {
  base: { service: "portcullis" },
  serializers: { err: errorSerializer },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label: string) => ({ level: label }) },
};

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ ...common, level, redact: { paths: redactedPaths, censor: "[redacted]" } }, destination ?? pino.destination({ sync: false }));
}

/**
 * The one-line-per-call access log, to the same destination. Its fields are
 * fixed and hold no secret, so it skips redaction, which measured at over half
 * the cost of a log line here.
 */
export function accessLogger(logger: Logger): Logger {
  const destination = (logger as unknown as Record<symbol, pino.DestinationStream>)[pino.symbols.streamSym]!;
  return pino({ ...common, level: logger.level }, destination);
}
