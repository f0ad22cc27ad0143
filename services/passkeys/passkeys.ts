import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import { textProblem, Violations } from "../kernel/validation.js";
import type { Database } from "../platform/database.js";
import { passkeyStore, type PasskeyRow } from "./store.js";

export const maxNameChars = 64;

// Another user's passkey gets the answer an id that names nothing gets.
const noSuchPasskey = () => new ConnectError("no such passkey", Code.NotFound);

/** A signed-in user's own passkeys: listed, renamed, deleted (the owner is mailed). */
export class Passkeys {
  constructor(
    private readonly db: Database,
    private readonly notices: { passkeyRemoved(userId: string): void },
  ) {}

  list(userId: string): Promise<PasskeyRow[]> {
    return passkeyStore.listOf(this.db, userId);
  }

  async rename(userId: string, passkeyId: string, name: string, origin: CallOrigin): Promise<PasskeyRow> {
    const trimmed = name.trim();
    new Violations().add("name", textProblem(trimmed, 1, maxNameChars)).throwIfAny();
    const renamed = await this.db.transaction(async (tx) => {
      const row = await passkeyStore.rename(tx, passkeyId, userId, trimmed);
      if (row) await audit(tx, origin, { event: "passkey.renamed", outcome: "success", userId, detail: { passkey: passkeyId } });
      return row;
    });
    if (!renamed) throw noSuchPasskey();
    return renamed;
  }

  /** Its sessions go on: deleting a passkey stops it signing in, and SessionService ends sessions. */
  async delete(userId: string, passkeyId: string, origin: CallOrigin): Promise<void> {
    const deleted = await this.db.transaction(async (tx) => {
      const gone = await passkeyStore.delete(tx, passkeyId, userId);
      if (gone) await audit(tx, origin, { event: "passkey.deleted", outcome: "success", userId, detail: { passkey: passkeyId } });
      return gone;
    });
    if (!deleted) throw noSuchPasskey();
    this.notices.passkeyRemoved(userId);
  }
}
