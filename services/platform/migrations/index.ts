import type { MigrationObject } from "@mikro-orm/core";
import { Migration0001SigningKeys } from "./0001-signing-keys.js";

/** Every migration, in order. Committed; never edited once on main. */
export const migrations: MigrationObject[] = [
  { name: "0001-signing-keys", class: Migration0001SigningKeys },
];
