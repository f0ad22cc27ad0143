import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { generateAuthenticationOptions, verifyAuthenticationResponse, type AuthenticationResponseJSON } from "@simplewebauthn/server";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { unauthenticated } from "../kernel/errors.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import { signIns } from "../platform/metrics.js";
import type { SignInAnswers } from "../session/sign-in-answers.js";
import type { SecondFactorSql } from "../session/store.js";
import type { DeviceInput, Sessions } from "../session/sessions.js";
import { userStore } from "../users/store.js";
import { SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import type { FinishPasskeySignInResponseSchema } from "../../gen/portcullis/v1/passkey_service_pb.js";
import { requirePasskeys, type Ceremonies } from "./ceremonies.js";
import { passkeyStore, type PasskeyRow } from "./store.js";
import { isUserHandleOf } from "./user-handle.js";
import { authenticationResponseOf, optionsJson } from "./webauthn-json.js";

/** Why a sign-in was refused, for the audit log and the metrics only: the caller hears one answer for all. */
type Refusal =
  | "ceremony_invalid"
  | "unknown_credential"
  | "verification_failed"
  | "user_handle_mismatch"
  | "counter_not_increased"
  /** Deleted, or used by a sign-in that committed between this one's read and its write. */
  | "passkey_changed"
  | "account_disabled";

const refused = () => unauthenticated("INVALID_CREDENTIALS", "passkey sign-in failed");

/**
 * Signing in with a passkey, without naming an account: the authenticator
 * offers its discoverable credentials, the assertion names one, and its
 * owner gets a new device session at aal 2 (a user-verified passkey is two
 * factors). A counter that did not move forward means a second copy of the
 * key may exist: that is refused and audited as a suspected clone.
 */
export class PasskeySignIn {
  constructor(
    private readonly db: Database,
    private readonly settings: Config["webauthn"],
    private readonly ceremonies: Ceremonies,
    private readonly sessions: Sessions,
    private readonly answers: SignInAnswers,
    /** Whether the account has a second factor, for the token's `mfa` claim: auth's fragment, on the same floor. */
    private readonly enrolled: SecondFactorSql,
  ) {}

  async start(): Promise<{ ceremonyId: string; options: JsonObject }> {
    requirePasskeys(this.settings);
    const options = await generateAuthenticationOptions({
      rpID: this.settings.rpId,
      allowCredentials: [],
      userVerification: "required",
      timeout: this.settings.challengeTtlSeconds * 1000,
    });
    const ceremonyId = await this.ceremonies.open(this.db, "sign_in", null, options.challenge);
    return { ceremonyId, options: optionsJson(options) };
  }

  async finish(
    request: { ceremonyId: string; credential: JsonObject; device: DeviceInput },
    origin: CallOrigin,
  ): Promise<MessageInitShape<typeof FinishPasskeySignInResponseSchema>> {
    const response = authenticationResponseOf(request.credential);
    const ceremony = await this.ceremonies.consume(this.db, request.ceremonyId, "sign_in", null);
    if (!ceremony) return this.refuse(origin, "ceremony_invalid", {});
    const passkey = await passkeyStore.byCredentialId(this.db, response.id);
    if (!passkey) return this.refuse(origin, "unknown_credential", { ceremony: ceremony.rowId });
    const seen = { ceremony: ceremony.rowId, passkey: passkey.id };
    const userId = passkey.user_id;
    const counter = await this.verifiedCounter(response, ceremony.challenge, passkey);
    if (counter === undefined) return this.refuse(origin, "verification_failed", seen, userId);
    // With no credentials allowed, WebAuthn (§7.2) has the authenticator name the account: one that does not is refused.
    const { userHandle } = response.response;
    if (!userHandle || !isUserHandleOf(userHandle, userId)) return this.refuse(origin, "user_handle_mismatch", seen, userId);
    if (!movedOn(passkey.sign_count, counter)) {
      await audit(this.db, origin, {
        event: "passkey.clone_suspected",
        outcome: "failure",
        userId,
        detail: { passkey: passkey.id, stored_count: passkey.sign_count, received_count: counter },
      });
      return this.refuse(origin, "counter_not_increased", seen, userId);
    }

    const signedIn = await this.db.transaction(async (tx) => {
      // Both checks come before the counter is written, so a refused sign-in leaves the passkey as it was. The user's
      // row lock is the one Sessions.create relies on; it also sees a disable that landed meanwhile.
      const user = await userStore.lock(tx, userId);
      if (!user || user.disable_time) return { refusal: "account_disabled" as const };
      const used = await passkeyStore.used(tx, passkey.id, passkey.sign_count, counter, this.enrolled);
      if (!used) return { refusal: "passkey_changed" as const };
      await audit(tx, origin, { event: "passkey.sign_in", outcome: "success", userId, detail: seen });
      const created = await this.sessions.create(tx, {
        userId,
        device: request.device,
        method: SignInMethod.PASSKEY,
        origin,
        event: { name: "sign_in", detail: { method: "passkey", passkey: passkey.id } },
      });
      return { user, created, mfaEnrolled: used.mfa_enrolled };
    });
    if (signedIn.refusal) return this.refuse(origin, signedIn.refusal, seen, userId);

    const { user, created, mfaEnrolled } = signedIn;
    return this.answers.signedIn({ user, created, device: request.device, method: "passkey", mfaEnrolled }, origin);
  }

  /** The assertion's counter if it answers the ceremony's challenge with the passkey's key, user verified; else undefined. */
  private async verifiedCounter(response: AuthenticationResponseJSON, challenge: string, passkey: PasskeyRow): Promise<number | undefined> {
    try {
      const verified = await verifyAuthenticationResponse({
        response,
        expectedChallenge: challenge,
        expectedOrigin: this.settings.origins,
        expectedRPID: this.settings.rpId,
        // The library judges the counter before the signature, so a forged assertion could pass for a clone; given 0 it
        // skips that, and movedOn judges the counter once the signature is known to be the passkey's.
        credential: { id: passkey.credential_id, publicKey: new Uint8Array(passkey.public_key), counter: 0 },
        requireUserVerification: true,
      });
      return verified.verified ? verified.authenticationInfo.newCounter : undefined;
    } catch {
      // The library throws for every mismatch (origin, relying party, challenge, flags); the audit row says it failed.
      return undefined;
    }
  }

  private async refuse(origin: CallOrigin, reason: Refusal, detail: Record<string, string>, userId?: string): Promise<never> {
    signIns.labels("passkey", reason).inc();
    await audit(this.db, origin, { event: "passkey.sign_in", outcome: "failure", userId, detail: { reason, ...detail } });
    throw refused();
  }
}

/**
 * WebAuthn's signature counter must grow with every use; authenticators that
 * keep none (many synced passkeys) send 0 every time, and that is no sign of a clone.
 */
function movedOn(stored: number, received: number): boolean {
  return received > stored || (stored === 0 && received === 0);
}
