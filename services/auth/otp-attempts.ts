import { randomUUID } from "node:crypto";
import type { AuditOrigin } from "../platform/audit.js";
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

type AttemptRow = FailureBudget & { position: string; locks: boolean } & (
  | { attempts: null }
  | { attempts: number; matched: false }
  | ({ attempts: number; matched: true; inserted: boolean } & UserRow)
);

/**
 * For each number of `input`: its wrong codes inside the window ($1 seconds),
 * at most the budget ($2), and when the oldest of them leaves the window.
 */
const budgetSql = `
  budget as (
    select i.phone, count(recent.fail_time)::int as failures,
           ceil(extract(epoch from min(recent.fail_time) + make_interval(secs => $1) - now()) * 1000)::int as wait_ms
    from input i left join lateral (
      select fail_time from otp_failure where phone_number = i.phone and fail_time > now() - make_interval(secs => $1)
      order by fail_time desc limit $2) recent on true
    group by i.phone)`;

export async function failureBudget(sql: Sql, phone: string, settings: Config["otp"]): Promise<FailureBudget> {
  const [budget] = await sql.query<FailureBudget>(`with input as (select $3::text as phone), ${budgetSql} select failures, wait_ms from budget`, [
    settings.failureWindowSeconds,
    settings.failureBudget,
    phone,
  ]);
  return budget!;
}

/**
 * For each number ($3) with its submitted code's HMAC ($4): the failure budget
 * (window $1 seconds, budget $2), the attempt, counted under the open code's
 * row lock before anything else and closing the code when it is right or was
 * the last attempt; for a wrong code, the failure against the number's budget
 * and its audit rows (the caller's IP $6, user agent $7, request $8, masked
 * number $9); for the right code the user, found or created ($5) and
 * row-locked. The code is compared inside the counting statement: both sides
 * are HMACs under a server key, so the comparison's timing says nothing about
 * the code.
 */
const attemptSql = `
  with input as (
    select * from unnest($3::text[], $4::bytea[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[])
      with ordinality as i(phone, code_mac, new_user_id, ip_address, user_agent, request_id, masked_phone, position)),
  ${budgetSql},
  attempt as (
    update otp_challenge c set attempts = c.attempts + 1,
      close_time = case when c.code_mac = i.code_mac or c.attempts + 1 >= c.max_attempts then now() end
    from input i join budget b on b.phone = i.phone
    where c.phone_number = i.phone and c.close_time is null and c.expire_time > now() and c.attempts < c.max_attempts
      and b.failures < $2
    returning c.phone_number, c.attempts, c.code_mac = i.code_mac as matched),
  wrong as (
    select i.*, a.attempts, b.failures + 1 as failures from input i
    join attempt a on a.phone_number = i.phone and not a.matched join budget b on b.phone = i.phone),
  failed as (
    insert into otp_failure (phone_number) select phone from wrong),
  failure_audited as (
    insert into audit_event (event, outcome, ip_address, user_agent, request_id, detail)
    select 'otp.verify', 'failure', ip_address, user_agent, request_id,
           jsonb_build_object('phone', masked_phone, 'attempt', attempts, 'failures_in_window', failures)
    from wrong
    union all
    select 'otp.phone_locked', 'denied', ip_address, user_agent, request_id, jsonb_build_object('phone', masked_phone)
    from wrong where failures = $2),
  signed_in as (
    insert into app_user (id, phone_number, phone_verify_time)
    select i.new_user_id, i.phone, now() from input i join attempt a on a.phone_number = i.phone where a.matched
    order by i.phone
    on conflict (phone_number) do update set phone_verify_time = coalesce(app_user.phone_verify_time, now())
    returning ${userColumns}, (xmax = 0) as inserted)
  select i.position, b.failures, b.wait_ms, a.attempts, a.matched, b.failures + 1 = $2 as locks, u.*
  from input i join budget b on b.phone = i.phone
  left join attempt a on a.phone_number = i.phone left join signed_in u on u.phone_number = i.phone`;

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
  ) {
    this.batcher = new Batcher((attempts) => this.checkAll(attempts), { key: (attempt) => attempt.phone, maxBatch: 64 });
  }

  check(attempt: CodeAttempt): Promise<AttemptOutcome> {
    return this.batcher.add(attempt);
  }

  private checkAll(attempts: CodeAttempt[]): Promise<AttemptOutcome[]> {
    const column = <T>(value: (attempt: CodeAttempt) => T) => attempts.map(value);
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<AttemptRow>(attemptSql, [
        this.settings.failureWindowSeconds,
        this.settings.failureBudget,
        column((attempt) => attempt.phone),
        column((attempt) => attempt.codeMac),
        column(() => randomUUID()),
        column((attempt) => attempt.origin.clientIp),
        column((attempt) => attempt.origin.userAgent),
        column((attempt) => attempt.origin.requestId),
        column((attempt) => maskPhone(attempt.phone)),
      ]);
      const outcomes: AttemptOutcome[] = new Array(attempts.length);
      const signingIn: { index: number; user: UserRow & { inserted: boolean } }[] = [];
      for (const row of rows) {
        const index = Number(row.position) - 1;
        if (row.attempts === null) outcomes[index] = { kind: "no_code", budget: row };
        else if (!row.matched) outcomes[index] = { kind: "wrong", locked: row.locks };
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
}
