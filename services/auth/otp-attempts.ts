import { randomUUID } from "node:crypto";
import { audit, type AuditOrigin } from "../platform/audit.js";
import { Batcher } from "../platform/batcher.js";
import type { Config } from "../platform/config.js";
import type { Database, Sql } from "../platform/database.js";
import type { CreatedSession, DeviceInput, Sessions } from "../session/sessions.js";
import { SignInMethod } from "../../gen/portcullis/v1/common_pb.js";
import { maskPhone } from "./phone.js";
import { userColumns, type UserRow } from "./users.js";

export interface FailureBudget {
  failures: number;
  /** Until the oldest failure in the window leaves it; null with none. */
  wait_ms: number | null;
}

/** A code submitted for a number: its HMAC, and the device that would be signed in. */
export interface CodeAttempt {
  phone: string;
  codeMac: Buffer;
  device: DeviceInput;
  origin: AuditOrigin;
}

export type AttemptOutcome =
  | { kind: "no_code"; budget: FailureBudget }
  | { kind: "wrong"; locked: boolean }
  | { kind: "disabled"; user: UserRow }
  | ({ kind: "signed_in"; user: UserRow & { inserted: boolean } } & CreatedSession);

type AttemptRow = FailureBudget & { position: string } & (
  | { attempts: null }
  | { attempts: number; matched: false }
  | ({ attempts: number; matched: true; inserted: boolean } & UserRow)
);

/** Wrong codes for a number inside the window ($1 phone, $2 window seconds, $3 budget), and when the oldest of them leaves it. */
const failureBudgetSql = `
  with recent as (
    select fail_time from otp_failure where phone_number = $1 and fail_time > now() - make_interval(secs => $2)
    order by fail_time desc limit $3)
  select count(*)::int as failures,
         ceil(extract(epoch from min(fail_time) + make_interval(secs => $2) - now()) * 1000)::int as wait_ms
  from recent`;

export async function failureBudget(sql: Sql, phone: string, settings: Config["otp"]): Promise<FailureBudget> {
  const [budget] = await sql.query<FailureBudget>(failureBudgetSql, [phone, settings.failureWindowSeconds, settings.failureBudget]);
  return budget!;
}

/**
 * For each number ($1) with its submitted code's HMAC ($2): the failure budget
 * (window $4 seconds, budget $5), the attempt, counted under the open code's
 * row lock before anything else and closing the code when it is right or was
 * the last attempt, and for the right code the user, found or created ($3) and
 * row-locked. The code is compared inside the counting statement: both sides
 * are HMACs under a server key, so the comparison's timing says nothing about
 * the code.
 */
const attemptSql = `
  with input as (
    select * from unnest($1::text[], $2::bytea[], $3::uuid[]) with ordinality as i(phone, code_mac, new_user_id, position)),
  budget as (
    select i.phone, count(recent.fail_time)::int as failures,
           ceil(extract(epoch from min(recent.fail_time) + make_interval(secs => $4) - now()) * 1000)::int as wait_ms
    from input i left join lateral (
      select fail_time from otp_failure where phone_number = i.phone and fail_time > now() - make_interval(secs => $4)
      order by fail_time desc limit $5) recent on true
    group by i.phone),
  attempt as (
    update otp_challenge c set attempts = c.attempts + 1,
      close_time = case when c.code_mac = i.code_mac or c.attempts + 1 >= c.max_attempts then now() end
    from input i join budget b on b.phone = i.phone
    where c.phone_number = i.phone and c.close_time is null and c.expire_time > now() and c.attempts < c.max_attempts
      and b.failures < $5
    returning c.phone_number, c.attempts, c.code_mac = i.code_mac as matched),
  signed_in as (
    insert into app_user (id, phone_number, phone_verify_time)
    select i.new_user_id, i.phone, now() from input i join attempt a on a.phone_number = i.phone where a.matched
    order by i.phone
    on conflict (phone_number) do update set phone_verify_time = coalesce(app_user.phone_verify_time, now())
    returning ${userColumns}, (xmax = 0) as inserted)
  select i.position, b.failures, b.wait_ms, a.attempts, a.matched, u.*
  from input i join budget b on b.phone = i.phone
  left join attempt a on a.phone_number = i.phone left join signed_in u on u.phone_number = i.phone`;

/**
 * Codes submitted for sign-in, checked in batches (see Batcher): one
 * transaction per batch counts every attempt, records wrong codes against
 * their numbers' budgets, and signs in the right ones. A number appears once
 * in a batch; a second attempt on it waits for the next, as it would wait on
 * the code's row lock.
 */
export class CodeAttempts {
  private readonly batcher: Batcher<CodeAttempt, AttemptOutcome>;

  constructor(
    private readonly db: Database,
    private readonly settings: Config["otp"],
    private readonly sessions: Sessions,
  ) {
    this.batcher = new Batcher((attempts) => this.checkAll(attempts), { key: (attempt) => attempt.phone, maxBatch: 64 });
  }

  check(attempt: CodeAttempt): Promise<AttemptOutcome> {
    return this.batcher.add(attempt);
  }

  private checkAll(attempts: CodeAttempt[]): Promise<AttemptOutcome[]> {
    // Every batch locks its numbers' codes and users in one order, so two batches do not wait on each other.
    const order = attempts.map((_, index) => index).sort((a, b) => (attempts[a]!.phone < attempts[b]!.phone ? -1 : 1));
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<AttemptRow>(attemptSql, [
        order.map((index) => attempts[index]!.phone),
        order.map((index) => attempts[index]!.codeMac),
        order.map(() => randomUUID()),
        this.settings.failureWindowSeconds,
        this.settings.failureBudget,
      ]);
      const outcomes: AttemptOutcome[] = new Array(attempts.length);
      const signingIn: { index: number; user: UserRow & { inserted: boolean } }[] = [];
      for (const row of rows) {
        const index = order[Number(row.position) - 1]!;
        const attempt = attempts[index]!;
        if (row.attempts === null) outcomes[index] = { kind: "no_code", budget: row };
        else if (!row.matched) outcomes[index] = { kind: "wrong", locked: await this.recordFailure(tx, attempt, row.attempts) };
        else if (row.disable_time) outcomes[index] = { kind: "disabled", user: row };
        else signingIn.push({ index, user: row });
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

  /** Counts a wrong code against the number's budget and audits it; says whether that spent the budget. */
  private async recordFailure(tx: Sql, attempt: CodeAttempt, attemptNumber: number): Promise<boolean> {
    await tx.query("insert into otp_failure (phone_number) values ($1)", [attempt.phone]);
    const { failures } = await failureBudget(tx, attempt.phone, this.settings);
    const phone = maskPhone(attempt.phone);
    await audit(tx, attempt.origin, { event: "otp.verify", outcome: "failure", detail: { phone, attempt: attemptNumber, failures_in_window: failures } });
    const locked = failures === this.settings.failureBudget;
    if (locked) await audit(tx, attempt.origin, { event: "otp.phone_locked", outcome: "denied", detail: { phone } });
    return locked;
  }
}
