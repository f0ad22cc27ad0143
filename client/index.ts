/** portcullis/client: the browser (and Node 20) library for Portcullis's Connect gateway. */
export { createPortcullisClient, type PortcullisClient, type PortcullisClientOptions } from "./client.js";
export {
  CaptchaRequiredError,
  InvalidArgumentError,
  KycLevelRequiredError,
  PermissionRequiredError,
  PortcullisError,
  RateLimitedError,
  SessionEndedError,
  StepUpRequiredError,
} from "./errors.js";
export type { Locks, SessionEndReason } from "./session-keeper.js";
export { localStorageAdapter, memoryStorage, sessionStorageAdapter, type StoredSession, type TokenStorage } from "./storage.js";
