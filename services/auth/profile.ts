import { Code, ConnectError } from "../kernel/errors.js";
import type { Database } from "../platform/database.js";
import { userStore } from "../users/store.js";
import type { UserRow } from "../users/user.js";

/** The signed-in user's own account. */
export class Profiles {
  constructor(private readonly db: Database) {}

  async get(userId: string): Promise<UserRow> {
    const user = await userStore.find(this.db, userId);
    // A valid token for a deleted user: treat like a revoked session.
    if (!user) throw new ConnectError("this account no longer exists", Code.Unauthenticated);
    return user;
  }

  async setDisplayName(userId: string, displayName: string): Promise<UserRow> {
    await userStore.setDisplayName(this.db, userId, displayName);
    return this.get(userId);
  }
}
