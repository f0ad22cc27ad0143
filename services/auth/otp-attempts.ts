import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CallOrigin } from "../kernel/call.js";
import { Batcher } from "../platform/batcher.js";
import type { Config } from "../platform/config.js";
import type { Database } from "../platform/database.js";
import type { CreatedSession, DeviceInput, Sessions } from "../session/sessions.js";
import type { UserRow } from "../users/user.js";
import { SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import type { MfaChallengeSchema } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { MfaSignIn } from "./mfa-sign-in.js";
import { maskPhone } from "./phone.js";
import { otpStore, type FailureBudget } from "./store.js";

/** A code submitted for a number: its HMAC, and the device that would be signed in. */
export interface CodeAttempt {
  phone: string;
  codeMac: Buffer;
  device: DeviceInput;
  origin: CallOrigin;
}

export type AttemptOutcome =
  | { kind: "no_code"; budget: FailureBudget }
  | { kind: "wrong"; locked: boolean }
  | { kind: "disabled"; user: UserRow }
  | { kind: "mfa_required"; user: UserRow; challenge: MessageInitShape<typeof MfaChallengeSchema> }
  | ({ kind: "signed_in"; user: UserRow & { inserted: boolean } } & CreatedSession);

/**
 * Codes submitted for sign-in, checked in batches (see Batcher): one
 * transaction per batch counts every attempt and records the wrong codes
 * against their numbers' budgets in one statement, then signs in the right
 * ones in another. A number appears once in a batch; a second attempt on it
 * waits for the next, as it would wait on the code's row lock.
 */
export class CodeAttempts {
  private readonly batcher: Batcher<CodeAttempt, AttemptOutcome>;

  constructor(
    private readonly db: Database,
    private readonly settings: Config["otp"],
    private readonly sessions: Sessions,
    private readonly mfa: MfaSignIn,
  ) {
    this.batcher = new Batcher((attempts) => this.checkAll(attempts), { name: "otp_attempt", key: (attempt) => attempt.phone, maxBatch: 64 });
  }

  check(attempt: CodeAttempt): Promise<AttemptOutcome> {
    return this.batcher.add(attempt);
  }

  private checkAll(attempts: CodeAttempt[]): Promise<AttemptOutcome[]> {
    return this.db.transaction(async (tx) => {
      const rows = await otpStore.checkAttempts(
        tx,
        attempts.map((attempt) => ({
          phone: attempt.phone,
          codeMac: attempt.codeMac,
          newUserId: randomUUID(),
          clientIp: attempt.origin.clientIp,
          userAgent: attempt.origin.userAgent,
          requestId: attempt.origin.requestId,
          maskedPhone: maskPhone(attempt.phone),
        })),
        this.settings,
      );
      const outcomes: AttemptOutcome[] = new Array(attempts.length);
      const signingIn: { index: number; user: UserRow & { inserted: boolean } }[] = [];
      for (const row of rows) {
        const index = Number(row.position) - 1;
        if (row.attempts === null) outcomes[index] = { kind: "no_code", budget: row };
        else if (!row.matched) outcomes[index] = { kind: "wrong", locked: row.locks };
        else if (row.disable_time) outcomes[index] = { kind: "disabled", user: row };
        else if (row.mfa_enrolled) {
          // The code was the first factor only: a challenge for the second, and no session yet.
          const { device, origin } = attempts[index]!;
          outcomes[index] = { kind: "mfa_required", user: row, challenge: await this.mfa.challenge(tx, { userId: row.id, method: "otp", device, origin }) };
        } else signingIn.push({ index, user: row });
      }
      // The upserts hold the users' row locks that createMany() relies on.
      const created = await this.sessions.createMany(
        tx,
        signingIn.map(({ index, user }) => ({
          userId: user.id,
          device: attempts[index]!.device,
          method: SignInMethod.OTP,
          origin: attempts[index]!.origin,
          event: { name: "sign_in" as const, detail: { method: "otp", new_user: user.inserted } },
        })),
      );
      signingIn.forEach(({ index, user }, k) => (outcomes[index] = { kind: "signed_in", user, ...created[k]! }));
      return outcomes;
    });
  }
}
