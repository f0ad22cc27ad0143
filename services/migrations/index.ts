import type { MigrationObject } from "@mikro-orm/core";
import { Migration0001SigningKeys } from "./0001-signing-keys.js";
import { Migration0002SignIn } from "./0002-sign-in.js";
import { Migration0003Kyc } from "./0003-kyc.js";
import { Migration0004KycLowerTime } from "./0004-kyc-lower-time.js";
import { Migration0005PasswordFailureSources } from "./0005-password-failure-sources.js";
import { Migration0006AccountLifecycle } from "./0006-account-lifecycle.js";
import { Migration0007ServiceAccounts } from "./0007-service-accounts.js";
import { Migration0008CodeFailures } from "./0008-code-failures.js";
import { Migration0009SecondFactors } from "./0009-second-factors.js";
import { Migration0010MfaLockouts } from "./0010-mfa-lockouts.js";
import { Migration0011Passkeys } from "./0011-passkeys.js";

/** Every migration, in order. Committed; never edited once on main. */
export const migrations: MigrationObject[] = [
  { name: "0001-signing-keys", class: Migration0001SigningKeys },
  { name: "0002-sign-in", class: Migration0002SignIn },
  { name: "0003-kyc", class: Migration0003Kyc },
  { name: "0004-kyc-lower-time", class: Migration0004KycLowerTime },
  { name: "0005-password-failure-sources", class: Migration0005PasswordFailureSources },
  { name: "0006-account-lifecycle", class: Migration0006AccountLifecycle },
  { name: "0007-service-accounts", class: Migration0007ServiceAccounts },
  { name: "0008-code-failures", class: Migration0008CodeFailures },
  { name: "0009-second-factors", class: Migration0009SecondFactors },
  { name: "0010-mfa-lockouts", class: Migration0010MfaLockouts },
  { name: "0011-passkeys", class: Migration0011Passkeys },
];
