import { randomUUID } from "node:crypto";
import type { JsonObject } from "@bufbuild/protobuf";
import { generateRegistrationOptions, verifyRegistrationResponse, type VerifiedRegistrationResponse } from "@simplewebauthn/server";
import { audit } from "../audit/store.js";
import type { CallOrigin, Principal } from "../kernel/call.js";
import { Code, ConnectError, invalidArgument } from "../kernel/errors.js";
import { textProblem, Violations } from "../kernel/validation.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import { userStore } from "../users/store.js";
import type { UserRow } from "../users/user.js";
import { requirePasskeys, type Ceremonies } from "./ceremonies.js";
import { optionsJson, registrationResponseOf } from "./webauthn-json.js";
import { maxNameChars } from "./passkeys.js";
import { passkeyStore, type PasskeyRow } from "./store.js";
import { userHandleOf } from "./user-handle.js";

const defaultName = "Passkey";

const accountGone = () => new ConnectError("this account no longer exists", Code.Unauthenticated);
const deadCeremony = () =>
  invalidArgument([{ field: "ceremony_id", description: "not a registration this server started for you, or it has expired or finished; start again" }]);
const notVerified = () =>
  invalidArgument([{ field: "credential", description: "does not answer this registration (challenge, origin, relying party or user verification)" }]);
// Whose it is stays unsaid: a credential id must not tell who else holds that authenticator's passkey.
const alreadyRegistered = () => invalidArgument([{ field: "credential", description: "this passkey is registered already" }]);

/** What adding a passkey needs from the account domain: the proof beyond a token (auth's ChangeProofs), and the owner's notice. */
export interface RegistrationGuards {
  prove(principal: Principal, currentPassword: string, event: string, origin: CallOrigin, options: { verifiedEmail: boolean }): Promise<UserRow>;
  passkeyAdded(userId: string): void;
}

/**
 * A signed-in user adds a passkey: Start hands out creation options bound to
 * the user (a discoverable credential, user verification, none of the user's
 * own authenticators again), Finish checks the authenticator's answer against
 * them and stores the credential.
 */
export class PasskeyRegistration {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["webauthn"],
    private readonly ceremonies: Ceremonies,
    private readonly guards: RegistrationGuards,
  ) {}

  /** The proof comes first: without it no ceremony opens. */
  async start(principal: Principal, currentPassword: string, origin: CallOrigin): Promise<{ ceremonyId: string; options: JsonObject }> {
    requirePasskeys(this.settings);
    const userId = principal.subject;
    const user = await this.guards.prove(principal, currentPassword, "passkey.registered", origin, { verifiedEmail: true });
    const existing = await passkeyStore.credentialsOf(this.db, userId);
    const userName = user.email ?? user.phone_number ?? "account";
    const options = await generateRegistrationOptions({
      rpName: this.settings.rpName,
      rpID: this.settings.rpId,
      userID: userHandleOf(userId),
      userName,
      userDisplayName: user.display_name || userName,
      timeout: this.settings.challengeTtlSeconds * 1000,
      attestationType: "none",
      excludeCredentials: existing.map((passkey) => ({ id: passkey.credential_id, transports: passkey.transports })),
      authenticatorSelection: { residentKey: "required", userVerification: "required" },
    });
    const ceremonyId = await this.ceremonies.open(this.db, "registration", userId, options.challenge);
    return { ceremonyId, options: optionsJson(options) };
  }

  async finish(userId: string, request: { ceremonyId: string; credential: JsonObject; name: string }, origin: CallOrigin): Promise<PasskeyRow> {
    const name = request.name.trim();
    new Violations().add("name", textProblem(name, 0, maxNameChars)).throwIfAny();
    const response = registrationResponseOf(request.credential);
    const ceremony = await this.ceremonies.consume(this.db, request.ceremonyId, "registration", userId);
    if (!ceremony) {
      await this.failed(origin, userId, { reason: "ceremony_invalid" });
      throw deadCeremony();
    }
    let verified: VerifiedRegistrationResponse;
    try {
      verified = await verifyRegistrationResponse({
        response,
        expectedChallenge: ceremony.challenge,
        expectedOrigin: this.settings.origins,
        expectedRPID: this.settings.rpId,
        requireUserVerification: true,
      });
    } catch {
      // The library throws for every mismatch; the caller hears one answer, the audit row says which ceremony.
      verified = { verified: false };
    }
    if (!verified.verified) {
      await this.failed(origin, userId, { reason: "verification_failed", ceremony: ceremony.rowId });
      throw notVerified();
    }
    const { credential, aaguid, credentialDeviceType } = verified.registrationInfo;
    const stored = await this.db.transaction(async (tx) => {
      if (!(await userStore.lock(tx, userId))) return "account_gone" as const;
      const row = await passkeyStore.insert(tx, {
        id: randomUUID(),
        userId,
        name: name || defaultName,
        credentialId: credential.id,
        publicKey: credential.publicKey,
        signCount: credential.counter,
        transports: credential.transports ?? [],
        aaguid,
        backupEligible: credentialDeviceType === "multiDevice",
      });
      if (!row) return "already_registered" as const;
      await audit(tx, origin, { event: "passkey.registered", outcome: "success", userId, detail: { passkey: row.id, synced: row.backup_eligible } });
      return row;
    });
    if (stored === "account_gone") throw accountGone();
    if (stored === "already_registered") {
      await this.failed(origin, userId, { reason: "already_registered" });
      throw alreadyRegistered();
    }
    this.guards.passkeyAdded(userId);
    return stored;
  }

  private failed(origin: CallOrigin, userId: string, detail: Record<string, string>): Promise<void> {
    return audit(this.db, origin, { event: "passkey.registered", outcome: "failure", userId, detail });
  }
}
